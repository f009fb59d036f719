"""The full-text search index: derived data beside the archive's index, rebuilt from the blobs.

``text`` normalises text the same way for documents and queries (NFKC, CJK as
bigrams; case and diacritics are folded by the FTS5 tokenizer); ``extract`` turns a
message's bytes into the fields that are searched (``markup``: HTML to text); ``query`` parses the query
language and compiles it to SQL over the search tables, never to an FTS syntax
error; ``database`` keeps the documents in ``search.sqlite`` and ``find`` runs a
query, one hit per placement.
"""
