"""Requirements: only named requirements (PEP 508) with `--hash` options reach pip."""

from __future__ import annotations

import pytest

from spinlet.errors import InvalidPackage, InvalidRequirements
from spinlet.requirements import MAX_REQUIREMENTS, MAX_TEXT_SIZE, from_package, parse
from tests.helpers import zipped

SHA256 = "sha256:" + "0123456789abcdef" * 4


@pytest.mark.parametrize(
    ("line", "normalised"),
    [
        ("pyyaml", "pyyaml"),
        ("PyYAML==6.0.2", "PyYAML==6.0.2"),
        ("requests[socks, security] >= 2.31, <3", "requests[security,socks]<3,>=2.31"),
        ('orjson; python_version >= "3.8"', 'orjson; python_version >= "3.8"'),
        ("numpy~=2.0 ; platform_machine=='x86_64'", 'numpy~=2.0; platform_machine == "x86_64"'),
        ("zope.interface!=5.0", "zope.interface!=5.0"),
        (f"six==1.17.0 --hash={SHA256}", f"six==1.17.0 --hash={SHA256}"),
        (f"six==1.17.0 --hash {SHA256}", f"six==1.17.0 --hash={SHA256}"),
    ],
)
def test_a_named_requirement_is_accepted_and_normalised(line: str, normalised: str) -> None:
    assert parse(line).lines == (normalised,)


def test_comments_blank_lines_and_continuations_are_pip_s() -> None:
    text = (
        "# the function's dependencies\n"
        "\n"
        "pyyaml>=6  # the C loader\n"
        "orjson \\\n"
        "  ==3.10.0 \\\n"
        f"  --hash={SHA256} \\\n"
        f"  --hash=sha512:{'ab' * 64}\n"
        "   \n"
        "six#not a comment without a space before it\n"
    )
    with pytest.raises(InvalidRequirements, match=r'line 9: "six#not'):
        parse(text)
    requirements = parse(text.rsplit("six", 1)[0])
    assert requirements.lines == (
        "pyyaml>=6",
        f"orjson==3.10.0 --hash={SHA256} --hash=sha512:{'ab' * 64}",
    )
    assert requirements.text == requirements.lines[0] + "\n" + requirements.lines[1]
    assert requirements.hashed


def test_a_comment_ends_a_continued_line_as_in_pip() -> None:
    assert parse("pyyaml  # the C loader \\\n--index-url http://10.0.0.1/\nsix").lines == (
        "pyyaml",
        "six",
    )


def test_nothing_is_no_requirements() -> None:
    requirements = parse("\n# nothing yet\n\n")
    assert (requirements.lines, requirements.text, requirements.hashed) == ((), "", False)


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("-r other.txt", "options are not accepted"),
        ("--requirement=other.txt", "options are not accepted"),
        ("-e ./lib", "options are not accepted"),
        ("--editable git+https://example.invalid/x.git", "options are not accepted"),
        ("-c constraints.txt", "options are not accepted"),
        ("--index-url http://10.0.0.1/simple", "options are not accepted"),
        ("-i http://10.0.0.1/simple", "options are not accepted"),
        ("--extra-index-url http://10.0.0.1/simple", "options are not accepted"),
        ("-f /srv/wheels", "options are not accepted"),
        ("--find-links=/srv/wheels", "options are not accepted"),
        ("--trusted-host 10.0.0.1", "options are not accepted"),
        ("--pre", "options are not accepted"),
        ("pyyaml --no-binary :all:", "only named requirements"),
        ("pyyaml --index-url http://10.0.0.1/simple", "only named requirements"),
        (f"pyyaml --hash={SHA256} --no-deps", "only named requirements"),
        ("https://example.invalid/pyyaml-6.0-py3-none-any.whl", "only named requirements"),
        ("git+https://example.invalid/x.git", "only named requirements"),
        ("pyyaml @ https://example.invalid/pyyaml.whl", "URL requirements are not accepted"),
        ("pyyaml @ file:///etc/passwd", "URL requirements are not accepted"),
        ("./lib", "only named requirements"),
        ("../lib", "only named requirements"),
        ("/tmp/x.whl", "only named requirements"),
        ("lib/", "only named requirements"),
        ("x.whl", "file names are not accepted"),
        ("pkg-1.0.tar.gz", "file names are not accepted"),
        ("pyyaml==${HOME}", "environment variables are not accepted"),
        ('pyyaml; python_version == "${PIP_INDEX_URL}"', "environment variables are not"),
        ("pyyaml --hash=md5:0123", "a --hash must be sha256:, sha384: or sha512:"),
        ("pyyaml --hash=sha256:xyz", "a --hash must be sha256:, sha384: or sha512:"),
        ("pyyaml ==", "only named requirements"),
        ("pyyaml[", "only named requirements"),
        ("import os; os.system('x')", "only named requirements"),
        ("!!!", "only named requirements"),
    ],
)
def test_any_other_line_is_refused_naming_its_number_and_text(line: str, why: str) -> None:
    with pytest.raises(InvalidRequirements) as refused:
        parse(f"# dependencies\nsix\n{line}\norjson\n", source="requirements.txt")
    assert refused.value.message.startswith(f'requirements.txt line 3: "{line}": ')
    assert why in refused.value.message
    assert refused.value.status == 400


def test_a_continued_line_is_named_by_its_first_line() -> None:
    with pytest.raises(InvalidRequirements, match=r'^requirements line 2: "pyyaml   --pre"'):
        parse("six\npyyaml \\\n  --pre\n")


def test_a_long_refused_line_is_quoted_in_part() -> None:
    with pytest.raises(InvalidRequirements) as refused:
        parse("-e " + "x" * 10_000)
    assert len(refused.value.message) < 300


def test_the_text_size_is_limited() -> None:
    line = "pyyaml  # " + "x" * 1000 + "\n"
    parse(line * (MAX_TEXT_SIZE // len(line)))
    with pytest.raises(InvalidRequirements, match="larger than 64 KiB"):
        parse(line * (MAX_TEXT_SIZE // len(line) + 1))


def test_the_number_of_requirements_is_limited() -> None:
    names = [f"p{number}" for number in range(MAX_REQUIREMENTS + 1)]
    assert len(parse("\n".join(names[:-1])).lines) == MAX_REQUIREMENTS
    with pytest.raises(InvalidRequirements, match="more than 1000 requirements"):
        parse("\n".join(names))


def test_a_package_s_requirements_txt_is_read_from_its_root() -> None:
    package = zipped({"main.py": b"", "requirements.txt": b"\xef\xbb\xbfpyyaml\n"})
    assert from_package(package) == "pyyaml\n"
    assert from_package(zipped({"main.py": b"", "lib/requirements.txt": b"x"})) is None


def test_a_package_s_requirements_txt_must_be_small_utf8() -> None:
    with pytest.raises(InvalidRequirements, match="not UTF-8"):
        from_package(zipped({"requirements.txt": b"pyyaml\xff\n"}))
    with pytest.raises(InvalidRequirements, match="larger than 64 KiB"):
        from_package(zipped({"requirements.txt": b"#" * (MAX_TEXT_SIZE + 1)}))
    with pytest.raises(InvalidPackage):
        from_package(b"not a zip")
