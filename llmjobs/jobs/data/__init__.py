"""``data.prepare``: turn sources into a chat-format training set (mix, template, filter, dedup, decontaminate)."""
