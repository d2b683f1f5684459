"""populate_subprojects on small synthetic QEMU trees (real directories and files).

Why synthetic: the rules (which donor wins, what counts as present, what a killed copy
leaves) are about directory layouts; a real QEMU tree would only make the test slow. The
real trees are exercised by ci/build-qemu on a git checkout."""

from __future__ import annotations

from pathlib import Path

from ivflat.ci.subprojects import NEEDED, TMP_SUFFIX, populate_subprojects

REV = "f5772a62ec52591ff6870b7e8ef32482371f22c6"


def _tree(root: Path, wraps: dict[str, str], have: dict[str, str] | None = None) -> Path:
    """A tree with ``subprojects/<name>.wrap`` pinning *wraps*' revisions and, for *have*,
    a downloaded subproject whose meson.build holds the given text."""
    sub = root / "subprojects"
    sub.mkdir(parents=True)
    for name, rev in wraps.items():
        (sub / f"{name}.wrap").write_text(f"[wrap-git]\nurl = https://x/{name}.git\n"
                                          f"revision = {rev}\ndepth = 1\n")
    for name, text in (have or {}).items():
        (sub / name / "tools").mkdir(parents=True)
        (sub / name / "meson.build").write_text(text)
        (sub / name / "tools" / "gen").write_text("#!/bin/sh\n")
    return root


def _all(rev: str = REV) -> dict[str, str]:
    return dict.fromkeys(NEEDED, rev)


def test_missing_ones_come_from_the_first_donor_that_has_them(tmp_path):
    """Each subproject the tree lacks is copied whole (scripts included) from the first donor
    that has it, in the donors' order, each copy said, and no temporary copy is left: a
    build without network gets what it needs from trees already downloaded."""
    tree = _tree(tmp_path / "clone", _all())
    user = _tree(tmp_path / "user", _all(), have={"keycodemapdb": "user"})
    debian = _tree(tmp_path / "debian", _all(), have=dict.fromkeys(NEEDED, "debian"))
    done = populate_subprojects(tree, [user, debian])
    sub = tree / "subprojects"
    assert (sub / "keycodemapdb" / "meson.build").read_text() == "user"
    assert (sub / "berkeley-softfloat-3" / "meson.build").read_text() == "debian"
    assert (sub / "berkeley-testfloat-3" / "tools" / "gen").read_text() == "#!/bin/sh\n"
    assert done == [f"keycodemapdb: copied from {user}/subprojects/keycodemapdb",
                    f"berkeley-softfloat-3: copied from {debian}/subprojects/berkeley-softfloat-3",
                    f"berkeley-testfloat-3: copied from {debian}/subprojects/berkeley-testfloat-3"]
    assert not list(sub.glob(f"*{TMP_SUFFIX}"))


def test_present_ones_are_left_alone(tmp_path):
    """Subprojects the tree already has are kept as they are and said to be present: a
    donor never overwrites the tree's own."""
    tree = _tree(tmp_path / "clone", _all(), have=dict.fromkeys(NEEDED, "own"))
    debian = _tree(tmp_path / "debian", _all(), have=dict.fromkeys(NEEDED, "debian"))
    done = populate_subprojects(tree, [debian])
    assert done == [f"{n}: present in {tree}" for n in NEEDED]
    assert {(tree / "subprojects" / n / "meson.build").read_text() for n in NEEDED} == {"own"}


def test_incomplete_download_is_replaced(tmp_path):
    """A directory without meson.build (a download that died) would make configure fail."""
    tree = _tree(tmp_path / "clone", {"keycodemapdb": REV})
    (tree / "subprojects" / "keycodemapdb" / ".git").mkdir(parents=True)
    debian = _tree(tmp_path / "debian", _all(), have=dict.fromkeys(NEEDED, "debian"))
    done = populate_subprojects(tree, [debian])
    assert done == [f"keycodemapdb: copied from {debian}/subprojects/keycodemapdb "
                    "(replaced an incomplete directory without meson.build)"]
    kdb = tree / "subprojects" / "keycodemapdb"
    assert (kdb / "meson.build").read_text() == "debian" and not (kdb / ".git").exists()


def test_no_donor_is_reported_and_nothing_created(tmp_path):
    """A subproject no donor has (a donor with the wrap only, one that does not exist) is
    reported MISSING with the donors looked in and a hint to download it, and nothing is
    created, so configure's own error stays the one to read."""
    tree = _tree(tmp_path / "clone", {"keycodemapdb": REV})
    bare = _tree(tmp_path / "bare", _all())  # wraps only, nothing downloaded
    done = populate_subprojects(tree, [bare, tmp_path / "does-not-exist"])
    assert len(done) == 1 and done[0].startswith("keycodemapdb: MISSING, no donor has it")
    assert str(bare) in done[0] and "download" in done[0]
    assert not (tree / "subprojects" / "keycodemapdb").exists()


def test_only_subprojects_the_tree_uses(tmp_path):
    """No wrap in the tree: it does not use that subproject, so nothing is copied."""
    tree = _tree(tmp_path / "clone", {"berkeley-softfloat-3": REV})
    debian = _tree(tmp_path / "debian", _all(), have=dict.fromkeys(NEEDED, "debian"))
    done = populate_subprojects(tree, [debian])
    assert [ln.split(":")[0] for ln in done] == ["berkeley-softfloat-3"]
    assert not (tree / "subprojects" / "keycodemapdb").exists()


def test_other_revision_is_used_and_said(tmp_path):
    """A donor that pins another revision is still used, and the copy says both revisions:
    a build with a mismatched subproject is possible, but never silent."""
    tree = _tree(tmp_path / "clone", {"keycodemapdb": "a" * 40})
    debian = _tree(tmp_path / "debian", {"keycodemapdb": "b" * 40},
                   have={"keycodemapdb": "debian"})
    (done,) = populate_subprojects(tree, [debian])
    assert done.endswith(f"(donor's wrap pins revision {'b' * 12}, this tree's {'a' * 12})")
    assert (tree / "subprojects" / "keycodemapdb" / "meson.build").is_file()


def test_leftover_of_a_killed_copy_is_swept_and_the_tree_is_no_donor(tmp_path):
    """A copy killed half-way left only the temporary name; the tree itself, even when
    passed among the donors, never counts as one."""
    tree = _tree(tmp_path / "clone", {"keycodemapdb": REV})
    half = tree / "subprojects" / f"keycodemapdb{TMP_SUFFIX}"
    (half / "data").mkdir(parents=True)
    debian = _tree(tmp_path / "debian", _all(), have={"keycodemapdb": "debian"})
    done = populate_subprojects(tree, [tree, debian])
    assert done == [f"keycodemapdb: copied from {debian}/subprojects/keycodemapdb"]
    assert not half.exists()
