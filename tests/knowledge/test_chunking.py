"""Structure-aware chunking of Markdown (no model): section paths, tables under their column
names, code blocks whole, lists under the sentence that introduces them."""

from __future__ import annotations

from knowledge import ChunkingConfig, chunk_document

GUIDE = """# Platform guide

Intro text before any section.

## Rate Limits

| Endpoint | Rate Limit | Window |
|----------|------------|--------|
| `/health` | 100 requests | 1 minute |
| `/v1/ai/enhance` | 5 requests | 1 minute |

## Setup

```bash
# not a heading: a comment in a code block
make run
```

### Settings

Set these before starting:

- `MLAAS_HOME`: where the state lives
- `MLAAS_PORT`: the HTTP port
"""


def test_each_chunk_carries_its_section_path_and_never_crosses_a_heading() -> None:
    chunks = chunk_document(GUIDE, "text/markdown", ChunkingConfig())
    assert [c.section for c in chunks] == [
        "Platform guide", "Platform guide > Rate Limits", "Platform guide > Setup",
        "Platform guide > Setup > Settings"]
    assert "# not a heading" in chunks[2].text and chunks[2].text.startswith("```bash")
    assert chunks[2].text.rstrip().endswith("```")
    assert chunks[3].text.startswith("Set these before starting:")
    assert chunks[1].indexed_text.startswith("Platform guide > Rate Limits\n| Endpoint")


def test_a_long_table_is_split_by_rows_each_part_under_the_column_names() -> None:
    rows = "\n".join(f"| `/v1/route/{i}` | {i} requests | 1 minute |" for i in range(60))
    text = (f"## Limits\n\nThe limits per route:\n\n| Endpoint | Rate Limit | Window |\n"
            f"|---|---|---|\n{rows}\n")
    chunks = chunk_document(text, "text/markdown", ChunkingConfig(size=64, overlap=8))
    assert len(chunks) > 2
    for chunk in chunks:
        lines = chunk.text.splitlines()
        assert lines[:3] == ["The limits per route:", "| Endpoint | Rate Limit | Window |",
                             "|---|---|---|"]
        assert chunk.section == "Limits"
    kept = [line for c in chunks for line in c.text.splitlines()[3:]]
    assert kept == rows.splitlines()  # every row once, in order


def test_a_long_list_is_split_by_items_under_its_lead_and_code_stays_fenced() -> None:
    items = "\n".join(f"- item {i} explains one more detail of the setting" for i in range(40))
    code = "\n".join(f"print({i})" for i in range(120))
    text = f"## Notes\n\nRemember:\n\n{items}\n\n```python\n{code}\n```\n"
    chunks = chunk_document(text, "text/markdown", ChunkingConfig(size=48, overlap=8))
    listed = [c for c in chunks if "item" in c.text]
    fenced = [c for c in chunks if "print(" in c.text]
    assert all(c.text.startswith("Remember:\n- item") for c in listed)
    assert all(c.text.startswith("```python\n") and c.text.endswith("\n```") for c in fenced)
    assert sum(c.text.count("- item") for c in listed) == 40
    assert sum(c.text.count("print(") for c in fenced) == 120


def test_plain_text_is_still_cut_into_overlapping_windows() -> None:
    words = " ".join(f"w{i}" for i in range(100))
    chunks = chunk_document(words, "text/plain", ChunkingConfig(size=40, overlap=10))
    assert [c.text.split()[0] for c in chunks] == ["w0", "w30", "w60"]
    assert all(c.section == "" for c in chunks)
