"""Writes byte-tokenizer.json: byte-level BPE, no merges, ids 0-3 special, byte b -> id 4 + b."""
import json


def bytes_to_unicode():
    """GPT-2's byte -> printable character table (what the ByteLevel pre-tokenizer uses)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


specials = [("<pad>", 0), ("<s>", 1), ("</s>", 2), ("<unk>", 3)]
vocab = {c: i for c, i in specials}
for b, ch in bytes_to_unicode().items():
    vocab[ch] = 4 + b
byte_level = {"add_prefix_space": False, "trim_offsets": True, "use_regex": True}
tok = {
    "version": "1.0",
    "truncation": None,
    "padding": None,
    "added_tokens": [
        {"id": i, "content": c, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}
        for c, i in specials
    ],
    "normalizer": None,
    "pre_tokenizer": {"type": "ByteLevel", **byte_level},
    "post_processor": None,
    "decoder": {"type": "ByteLevel", **byte_level},
    "model": {
        "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
        "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
        "vocab": vocab, "merges": [],
    },
}
with open("byte-tokenizer.json", "w") as f:
    json.dump(tok, f, ensure_ascii=False, indent=1)
