"""README.zh-CN.md follows README.md: the same sections, in the same order.

A Chinese reader who follows a link from the English README to "its" section,
or the other way round, must find it; a section added to one and not the
other fails here.
"""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Each English section heading and its Chinese one.
SECTIONS = {
    "Two commands": "两条命令",
    "Backups": "备份",
    "A real server": "部署到真实服务器",
    "Growing into a cluster": "扩展为集群",
    "How it fits together": "整体结构",
    "Deploying and rolling back": "发布与回滚",
    "Performance": "性能",
    "Security": "安全",
    "Limits and abuse": "限制与滥用",
    "Operating": "运维",
    "Role variables": "角色变量",
    "Using the roles from another project": "在其他项目中使用这些角色",
    "Working on chatstack": "参与 chatstack 开发",
    "Development": "开发",
}


def sections(readme: str) -> list[str]:
    """The `##` headings outside code blocks, in order."""
    text = re.sub(r"^```.*?^```", "", (ROOT / readme).read_text(), flags=re.M | re.S)
    return re.findall(r"^## (.+?)\s*$", text, flags=re.M)


def test_the_chinese_readme_has_the_english_readmes_sections_in_order():
    """A section of one README missing from the other, or out of order, fails here."""
    english = sections("README.md")
    assert english == list(SECTIONS), "README.md's sections changed: update SECTIONS and the zh-CN"
    assert sections("README.zh-CN.md") == [SECTIONS[heading] for heading in english]


def test_each_readme_links_to_the_other():
    """Readers landing on either README find the other language from its top."""
    assert "(README.zh-CN.md)" in (ROOT / "README.md").read_text()
    assert "(README.md)" in (ROOT / "README.zh-CN.md").read_text()
