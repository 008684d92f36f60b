"""Text for people and scripts: one convention for figures; records, Markdown, escaping."""
