import numpy as np
import pytest

from cosface.errors import CosfaceError
from cosface.evaluation.pairs import read_lfw

# 2 folds of 2 same + 2 different pairs, in the LFW pairs.txt layout.
PAIRS = """2\t2
Abel_Pacheco\t1\t4
Akhmed_Zakayev\t1\t3
Abdel_Madi_Shabneh\t1\tDean_Barker\t1
Abdel_Madi_Shabneh\t1\tGiancarlo_Fisichella\t1
Abel_Pacheco\t2\t4
Zico\t1\t2
Zico\t2\tAbel_Pacheco\t1
Dean_Barker\t1\tAkhmed_Zakayev\t3
"""


def make_lfw(root, text=PAIRS, subdir="lfw_align_112", skip=(), newline="\n"):
    (root / "pairs.txt").write_bytes(text.replace("\n", newline).encode())
    images = root / subdir if subdir else root
    for line in text.splitlines():
        f = line.split()
        names = [(f[0], f[1]), (f[0], f[2])] if len(f) == 3 else [(f[0], f[1]), (f[2], f[3])] if len(f) == 4 else []
        for name, n in names:
            rel = f"{name}/{name}_{int(n):04d}.jpg"
            if rel in skip:
                continue
            (images / name).mkdir(parents=True, exist_ok=True)
            (images / rel).write_bytes(b"x")
    return root


def test_reads_lfw_layout(tmp_path):
    p = read_lfw(make_lfw(tmp_path))
    assert len(p) == 8 and p.n_folds == 2
    assert p.issame.tolist() == [True, True, False, False, True, True, False, False]
    assert p.flag.tolist() == [1, 1, -1, -1, 1, 1, -1, -1]
    assert p.fold.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    names = [img.split("lfw_align_112/")[1] for img in p.images]
    assert len(names) == len(set(names)) == 10        # each distinct image once
    assert names[p.left[0]] == "Abel_Pacheco/Abel_Pacheco_0001.jpg"
    assert names[p.right[0]] == "Abel_Pacheco/Abel_Pacheco_0004.jpg"
    assert names[p.right[3]] == "Giancarlo_Fisichella/Giancarlo_Fisichella_0001.jpg"
    assert p.right[6] == p.left[0]                    # shared image -> shared index


def test_images_directly_under_dir_crlf_and_trailing_blanks(tmp_path):
    text = PAIRS.replace("Zico\t1\t2", "Zico\t1\t2   ") + "\n\n   \n"
    p = read_lfw(make_lfw(tmp_path, text, subdir=None, newline="\r\n"))
    assert len(p) == 8 and p.fold.tolist() == [0] * 4 + [1] * 4
    assert p.images[0] == str(tmp_path / "Abel_Pacheco" / "Abel_Pacheco_0001.jpg")


def test_other_fold_sizes_from_header(tmp_path):
    body = "".join(f"P{i}\t1\t2\n" if i % 2 == 0 else f"P{i}\t1\tQ{i}\t1\n" for i in range(8))
    p = read_lfw(make_lfw(tmp_path, "4\t1\n" + body))
    assert p.fold.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


def test_no_header_means_ten_equal_folds(tmp_path):
    body = "".join(f"P{i}\t1\t2\n" for i in range(20))
    p = read_lfw(make_lfw(tmp_path, body))
    assert p.fold.tolist() == np.repeat(np.arange(10), 2).tolist()
    (tmp_path / "pairs.txt").write_text("".join(f"P{i}\t1\t2\n" for i in range(21)))
    with pytest.raises(CosfaceError, match="21 pairs.*10 equal folds"):
        read_lfw(tmp_path)


@pytest.mark.parametrize(
    "bad,lineno",
    [("Zico\t1", 7), ("Zico\tone\t2", 7), ("", 7), ("Zico\t1\tB\t2\t3", 7), ("Zico\t-1\t2", 7)],
)
def test_malformed_line_names_file_line_and_text(tmp_path, bad, lineno):
    text = PAIRS.replace("Zico\t1\t2", bad)
    make_lfw(tmp_path, PAIRS)
    (tmp_path / "pairs.txt").write_text(text)
    with pytest.raises(CosfaceError) as e:
        read_lfw(tmp_path)
    msg = str(e.value)
    assert f"pairs.txt:{lineno}: malformed pair line {bad!r}" in msg


def test_header_and_count_disagree(tmp_path):
    make_lfw(tmp_path, PAIRS)
    (tmp_path / "pairs.txt").write_text(PAIRS.replace("2\t2", "3\t2", 1))
    with pytest.raises(CosfaceError, match="header says 3 folds.*12 pairs.*has 8"):
        read_lfw(tmp_path)


def test_fold_structure_is_checked(tmp_path):
    # fold 0 gets 3 same-person pairs and fold 1 only 1
    text = PAIRS.replace("Abdel_Madi_Shabneh\t1\tDean_Barker\t1", "Zico\t1\t2").replace(
        "Zico\t1\t2\nZico\t2\tAbel", "Zico\t1\tDean_Barker\t1\nZico\t2\tAbel"
    )
    make_lfw(tmp_path, text)
    with pytest.raises(CosfaceError, match=r"fold 0 \(lines 2-5\) has 3 same-person pairs, header says 2"):
        read_lfw(tmp_path)


def test_missing_images_listed_once_with_count(tmp_path):
    body = "".join(f"P{i}\t1\t2\n" for i in range(10))
    skip = {f"P{i}/P{i}_0002.jpg" for i in range(8)}
    make_lfw(tmp_path, body, skip=skip)
    with pytest.raises(CosfaceError) as e:
        read_lfw(tmp_path)
    msg = str(e.value)
    assert msg.startswith("8 of 20 images named in")
    assert "P0/P0_0002.jpg" in msg and "P4/P4_0002.jpg" in msg and "and 3 more" in msg
    assert "P5/P5_0002.jpg" not in msg


def test_missing_dir_or_pairs_file(tmp_path):
    with pytest.raises(CosfaceError, match="does not exist"):
        read_lfw(tmp_path / "nope")
    with pytest.raises(CosfaceError, match="pairs.txt not found"):
        read_lfw(tmp_path)


def view1(n_same, n_diff, header):
    """pairsDevTest.txt's layout: a single count, then the same-person pairs, then the different-person pairs."""
    same = "".join(f"Name_{i}\t1\t{i % 3 + 2}\n" for i in range(n_same))
    diff = "".join(f"Name_{i}\t1\tOther_Name_{i}\t{i % 4 + 1}\n" for i in range(n_diff))
    return f"{header}\n{same}{diff}"


def test_view1_layout_with_single_count_header(tmp_path):
    p = read_lfw(make_lfw(tmp_path, view1(12, 12, "12  "), newline="\r\n"))
    assert len(p) == 24 and p.issame.tolist() == [True] * 12 + [False] * 12
    per_kind = [0, 0, 1, 2, 3, 4, 5, 5, 6, 7, 8, 9]          # i * 10 // 12
    assert p.fold.tolist() == per_kind + per_kind
    names = [img.split("lfw_align_112/")[1] for img in p.images]
    assert names[p.left[12]] == "Name_0/Name_0_0001.jpg"
    assert names[p.right[12]] == "Other_Name_0/Other_Name_0_0001.jpg"


def test_view1_layout_is_checked(tmp_path):
    make_lfw(tmp_path, view1(10, 10, "10"))
    (tmp_path / "pairs.txt").write_text(view1(10, 10, "11"))
    with pytest.raises(CosfaceError, match=r"pairs.txt: header says 11 same \+ 11 different pairs \(22 pairs\) but .* 20"):
        read_lfw(tmp_path)
    # a different-person pair on line 11, among the same-person pairs (lines 2-11)
    (tmp_path / "pairs.txt").write_text(view1(9, 11, "10"))
    with pytest.raises(CosfaceError, match=r"pairs.txt:11: a different-person pair, .* lines 2-11 are same-person"):
        read_lfw(tmp_path)
    (tmp_path / "pairs.txt").write_text(view1(3, 3, "3"))
    with pytest.raises(CosfaceError, match=r"pairs.txt:1: header '3' .* at least 10"):
        read_lfw(tmp_path)
