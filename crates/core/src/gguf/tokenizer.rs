//! Tokenizers rebuilt from GGUF metadata (`tokenizer.ggml.*`), reproducing what llama.cpp and
//! `transformers`' GGUF loader tokenize.
//!
//! * `tokenizer.ggml.model = "gpt2"`: byte-level BPE from `tokens` + `merges`, cut first by the
//!   pre-tokenizer `tokenizer.ggml.pre` names (`smollm` isolates every digit, `qwen2` and
//!   `llama-bpe` have their own regexes, `default`/`gpt-2` is GPT-2's).
//! * `tokenizer.ggml.model = "llama"`: SentencePiece-style BPE with byte fallback. The file has
//!   scores instead of merges; the merges are derived the way SentencePiece merges (the pair
//!   whose merged token scores highest goes first). Spaces become `▁`, and a `▁` is prepended
//!   to each text segment when `add_space_prefix` is set (Gemma: not set).
//!
//! Control tokens (`token_type` 3) become special added tokens, user-defined ones (4) plain
//! added tokens: both are matched in the raw text before the model sees it, as llama.cpp does.
//! `add_bos_token` / `add_eos_token` become a post-processor, so `encode(text, true)` adds them.

use std::collections::HashMap;

use serde::Serialize;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::{SpecialToken, TemplateProcessing};
use tokenizers::{
    AddedToken, DecoderWrapper, NormalizerWrapper, PreTokenizerWrapper, SplitDelimiterBehavior,
};

use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use crate::tokenizer::Tokenizer;

/// llama.cpp's token types (`tokenizer.ggml.token_type`).
const NORMAL: i64 = 1;
const UNKNOWN: i64 = 2;
const CONTROL: i64 = 3;
const USER_DEFINED: i64 = 4;
const UNUSED: i64 = 5;
const BYTE: i64 = 6;

/// Llama 3's split (llama.cpp `llama-bpe`).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's split: like Llama 3's with single digits.
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The `tokenizer.ggml.pre` values Strata knows, for error messages.
const KNOWN_PRE: &str =
    "default, gpt-2, gpt2, smollm, qwen2, deepseek-r1-qwen, llama-bpe, llama3, llama-v3, smaug-bpe";

/// What the metadata says about the tokenizer.
struct Spec<'a> {
    model: &'a str,
    pre: &'a str,
    tokens: Vec<&'a str>,
    types: Vec<i64>,
    bos: Option<usize>,
    eos: Option<usize>,
    unk: Option<usize>,
    pad: Option<usize>,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
}

impl<'a> Spec<'a> {
    /// `None` when the file describes no tokenizer.
    fn read(file: &'a GgufFile) -> Result<Option<Self>> {
        let Some(model) = file.opt_string("tokenizer.ggml.model")? else {
            return Ok(None);
        };
        let tokens = file.strings("tokenizer.ggml.tokens")?;
        let types = if file.has("tokenizer.ggml.token_type") {
            file.i64s("tokenizer.ggml.token_type")?
        } else {
            vec![NORMAL; tokens.len()]
        };
        if types.len() != tokens.len() {
            return Err(Error::model(
                file.path(),
                format!(
                    "metadata `tokenizer.ggml.token_type` has {} entries for {} tokens",
                    types.len(),
                    tokens.len()
                ),
            ));
        }
        let id = |key: &str| -> Result<Option<usize>> {
            let key = format!("tokenizer.ggml.{key}");
            match file.opt_usize(&key)? {
                Some(id) if id >= tokens.len() => Err(Error::model(
                    file.path(),
                    format!(
                        "metadata `{key}` = {id} is not a token id (the vocabulary has {})",
                        tokens.len()
                    ),
                )),
                other => Ok(other),
            }
        };
        // llama.cpp's defaults: SentencePiece adds BOS and a space prefix, byte-level BPE neither.
        let spm = model == "llama";
        Ok(Some(Self {
            model,
            pre: file.opt_string("tokenizer.ggml.pre")?.unwrap_or("default"),
            bos: id("bos_token_id")?,
            eos: id("eos_token_id")?,
            unk: id("unknown_token_id")?,
            pad: id("padding_token_id")?,
            add_bos: file
                .opt_bool("tokenizer.ggml.add_bos_token")?
                .unwrap_or(spm),
            add_eos: file
                .opt_bool("tokenizer.ggml.add_eos_token")?
                .unwrap_or(false),
            add_space_prefix: file
                .opt_bool("tokenizer.ggml.add_space_prefix")?
                .unwrap_or(spm),
            tokens,
            types,
        }))
    }

    /// Token → id; a token listed twice keeps its first id.
    fn vocab(&self) -> Vocab {
        let mut vocab = Vocab::default();
        for (id, token) in self.tokens.iter().enumerate() {
            vocab.entry(token.to_string()).or_insert(id as u32);
        }
        vocab
    }

    /// Control tokens (special) and user-defined tokens (not special), both matched verbatim.
    fn added_tokens(&self) -> Vec<AddedToken> {
        self.tokens
            .iter()
            .zip(&self.types)
            .filter(|(_, t)| matches!(**t, CONTROL | USER_DEFINED))
            .map(|(token, &t)| AddedToken::from(token.to_string(), t == CONTROL).normalized(false))
            .collect()
    }
}

/// Builds the tokenizer `file`'s metadata describes, or `None` when it describes none. End-of-
/// sequence ids are left to the caller ([`Tokenizer::with_eos_ids`]).
pub fn build_tokenizer(file: &GgufFile) -> Result<Option<Tokenizer>> {
    let Some(spec) = Spec::read(file)? else {
        return Ok(None);
    };
    let bad = |msg: String| Error::model(file.path(), msg);
    let tk_err =
        |what: &str, e: tokenizers::Error| bad(format!("cannot build the tokenizer ({what}): {e}"));
    let mut tok = match spec.model {
        "gpt2" => byte_level_bpe(file, &spec)?,
        "llama" => sentencepiece_bpe(file, &spec)?,
        other => {
            return Err(bad(format!(
                "metadata `tokenizer.ggml.model` = `{other}`: Strata rebuilds `gpt2` (byte-level BPE) and \
                 `llama` (SentencePiece BPE) tokenizers"
            )));
        }
    };
    tok.add_special_tokens(spec.added_tokens().into_iter().filter(|t| t.special))
        .map_err(|e| tk_err("special tokens", e))?;
    tok.add_tokens(spec.added_tokens().into_iter().filter(|t| !t.special))
        .map_err(|e| tk_err("user-defined tokens", e))?;
    if let Some(post) =
        post_processor(&spec).map_err(|e| bad(format!("tokenizer metadata: {e}")))?
    {
        tok.with_post_processor(Some(post));
    }
    Ok(Some(Tokenizer::from_inner(tok)))
}

/// `tokenizer.ggml.model = "gpt2"`.
fn byte_level_bpe(file: &GgufFile, spec: &Spec<'_>) -> Result<tokenizers::Tokenizer> {
    let merges = file
        .strings("tokenizer.ggml.merges")?
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| {
                    Error::model(
                        file.path(),
                        format!("metadata `tokenizer.ggml.merges`: entry {i} ({m:?}) is not two tokens separated by a space"),
                    )
                })
        })
        .collect::<Result<Vec<_>>>()?;
    let bpe = BPE::builder()
        .vocab_and_merges(spec.vocab(), merges)
        .build()
        .map_err(|e| Error::model(file.path(), format!("cannot build the BPE tokenizer: {e}")))?;
    let byte_level = |use_regex: bool| ByteLevel::new(spec.add_space_prefix, true, use_regex);
    let regex_then_bytes = |regex: &str| -> Result<PreTokenizerWrapper> {
        let split = Split::new(
            SplitPattern::Regex(regex.into()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| Error::model(file.path(), format!("pre-tokenizer regex: {e}")))?;
        Ok(PreTokenizerSequence::new(vec![split.into(), byte_level(false).into()]).into())
    };
    let pre: PreTokenizerWrapper = match spec.pre {
        "default" | "gpt-2" | "gpt2" => byte_level(true).into(),
        "smollm" => {
            PreTokenizerSequence::new(vec![Digits::new(true).into(), byte_level(true).into()])
                .into()
        }
        "qwen2" | "deepseek-r1-qwen" => regex_then_bytes(QWEN2_SPLIT)?,
        "llama-bpe" | "llama3" | "llama-v3" | "smaug-bpe" => regex_then_bytes(LLAMA3_SPLIT)?,
        other => {
            return Err(Error::model(
                file.path(),
                format!(
                    "metadata `tokenizer.ggml.pre` = `{other}` is not a pre-tokenizer Strata knows (known: {KNOWN_PRE})"
                ),
            ));
        }
    };
    let mut tok = tokenizers::Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(pre));
    tok.with_decoder(Some(ByteLevelDecoder::default()));
    Ok(tok)
}

/// `tokenizer.ggml.model = "llama"`.
fn sentencepiece_bpe(file: &GgufFile, spec: &Spec<'_>) -> Result<tokenizers::Tokenizer> {
    let scores = file.f32s("tokenizer.ggml.scores")?;
    if scores.len() != spec.tokens.len() {
        return Err(Error::model(
            file.path(),
            format!(
                "metadata `tokenizer.ggml.scores` has {} entries for {} tokens",
                scores.len(),
                spec.tokens.len()
            ),
        ));
    }
    let merges = merges_from_scores(&spec.tokens, &spec.types, &scores);
    let mut builder = BPE::builder()
        .vocab_and_merges(spec.vocab(), merges)
        .byte_fallback(true)
        .fuse_unk(true);
    if let Some(unk) = spec.unk {
        builder = builder.unk_token(spec.tokens[unk].to_string());
    }
    let bpe = builder.build().map_err(|e| {
        Error::model(
            file.path(),
            format!("cannot build the SentencePiece tokenizer: {e}"),
        )
    })?;
    let to_metaspace =
        Replace::new(" ", "▁").map_err(|e| Error::model(file.path(), e.to_string()))?;
    let from_metaspace =
        Replace::new("▁", " ").map_err(|e| Error::model(file.path(), e.to_string()))?;
    let normalizer: NormalizerWrapper = if spec.add_space_prefix {
        NormalizerSequence::new(vec![Prepend::new("▁".into()).into(), to_metaspace.into()]).into()
    } else {
        to_metaspace.into()
    };
    let mut decoders: Vec<DecoderWrapper> = vec![
        from_metaspace.into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    if spec.add_space_prefix {
        decoders.push(Strip::new(' ', 1, 0).into());
    }
    let mut tok = tokenizers::Tokenizer::new(bpe);
    tok.with_normalizer(Some(normalizer)).map_err(|e| {
        Error::model(
            file.path(),
            format!("cannot build the SentencePiece tokenizer: {e}"),
        )
    })?;
    tok.with_decoder(Some(DecoderSequence::new(decoders)));
    Ok(tok)
}

/// SentencePiece BPE merges highest-scoring merged token first. Expressed as ranked BPE merges:
/// every normal token that splits into two vocabulary tokens contributes its splits, tokens in
/// descending score (ties in vocabulary order), a token's splits by descending scores of their
/// halves.
fn merges_from_scores(tokens: &[&str], types: &[i64], scores: &[f32]) -> Vec<(String, String)> {
    let mut by_text: HashMap<&str, usize> = HashMap::with_capacity(tokens.len());
    for (id, token) in tokens.iter().enumerate() {
        by_text.entry(token).or_insert(id);
    }
    let mut merged: Vec<usize> = (0..tokens.len()).filter(|&i| types[i] == NORMAL).collect();
    merged.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut merges = Vec::new();
    for id in merged {
        let token = tokens[id];
        let mut splits: Vec<(usize, usize)> = token
            .char_indices()
            .skip(1)
            .filter_map(|(at, _)| Some((*by_text.get(&token[..at])?, *by_text.get(&token[at..])?)))
            .collect();
        splits.sort_by(|&(l1, r1), &(l2, r2)| {
            scores[l2]
                .total_cmp(&scores[l1])
                .then(scores[r2].total_cmp(&scores[r1]))
        });
        merges.extend(
            splits
                .into_iter()
                .map(|(l, r)| (tokens[l].to_string(), tokens[r].to_string())),
        );
    }
    merges
}

/// BOS / EOS around every encoded text, as `add_bos_token` / `add_eos_token` ask.
fn post_processor(spec: &Spec<'_>) -> std::result::Result<Option<TemplateProcessing>, String> {
    let marker = |name: &str, id: Option<usize>| -> std::result::Result<SpecialToken, String> {
        let id = id.ok_or_else(|| {
            format!("`tokenizer.ggml.add_{name}_token` is set but `tokenizer.ggml.{name}_token_id` is missing")
        })?;
        let token = spec.tokens[id].to_string();
        SpecialToken::new(name.into(), vec![id as u32], vec![token]).map_err(|e| e.to_string())
    };
    let mut specials = Vec::new();
    let mut single = Vec::new();
    if spec.add_bos {
        specials.push(marker("bos", spec.bos)?);
        single.push("bos");
    }
    single.push("$A");
    if spec.add_eos {
        specials.push(marker("eos", spec.eos)?);
        single.push("eos");
    }
    if specials.is_empty() {
        return Ok(None);
    }
    // A pair is the single template twice, the second sequence with type id 1.
    let second = single.iter().map(|&p| if p == "$A" { "$B:1" } else { p });
    let pair: Vec<&str> = single.iter().copied().chain(second).collect();
    TemplateProcessing::builder()
        .try_single(single)?
        .try_pair(pair)?
        .special_tokens(specials)
        .build()
        .map(Some)
        .map_err(|e| e.to_string())
}

/// What `strata inspect` shows about a GGUF tokenizer.
#[derive(Debug, Clone, Serialize)]
pub struct TokenizerSummary {
    /// `tokenizer.ggml.model` (`gpt2`, `llama`, …).
    pub model: String,
    /// `tokenizer.ggml.pre`.
    pub pre: String,
    /// Vocabulary size.
    pub n_tokens: usize,
    /// Number of merges (byte-level BPE), when stored.
    pub n_merges: Option<usize>,
    /// Beginning-of-sequence token, `(id, token)`.
    pub bos: Option<(usize, String)>,
    /// End-of-sequence token.
    pub eos: Option<(usize, String)>,
    /// Unknown token.
    pub unknown: Option<(usize, String)>,
    /// Padding token.
    pub padding: Option<(usize, String)>,
    /// Whether encoding adds BOS.
    pub add_bos: bool,
    /// Whether encoding adds EOS.
    pub add_eos: bool,
    /// Whether a `▁` is prepended (SentencePiece).
    pub add_space_prefix: bool,
    /// Control tokens (`token_type` 3), `(id, token)`.
    pub control: Vec<(usize, String)>,
    /// User-defined tokens (`token_type` 4), `(id, token)`.
    pub user_defined: Vec<(usize, String)>,
    /// Token count per type name (`normal`, `control`, `byte`, …).
    pub type_counts: std::collections::BTreeMap<String, usize>,
}

impl TokenizerSummary {
    /// Reads the summary, or `None` when the file describes no tokenizer.
    pub fn read(file: &GgufFile) -> Result<Option<Self>> {
        let Some(spec) = Spec::read(file)? else {
            return Ok(None);
        };
        let named = |id: Option<usize>| id.map(|i| (i, spec.tokens[i].to_string()));
        let of_type = |kind: i64| -> Vec<(usize, String)> {
            (0..spec.tokens.len())
                .filter(|&i| spec.types[i] == kind)
                .map(|i| (i, spec.tokens[i].to_string()))
                .collect()
        };
        let mut type_counts = std::collections::BTreeMap::new();
        for &t in &spec.types {
            let name = match t {
                NORMAL => "normal",
                UNKNOWN => "unknown",
                CONTROL => "control",
                USER_DEFINED => "user-defined",
                UNUSED => "unused",
                BYTE => "byte",
                _ => "other",
            };
            *type_counts.entry(name.to_string()).or_insert(0) += 1;
        }
        let n_merges = if file.has("tokenizer.ggml.merges") {
            Some(file.strings("tokenizer.ggml.merges")?.len())
        } else {
            None
        };
        Ok(Some(Self {
            model: spec.model.to_string(),
            pre: spec.pre.to_string(),
            n_tokens: spec.tokens.len(),
            n_merges,
            bos: named(spec.bos),
            eos: named(spec.eos),
            unknown: named(spec.unk),
            padding: named(spec.pad),
            add_bos: spec.add_bos,
            add_eos: spec.add_eos,
            add_space_prefix: spec.add_space_prefix,
            control: of_type(CONTROL),
            user_defined: of_type(USER_DEFINED),
            type_counts,
        }))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::quantized::gguf_file::Value;

    use super::*;
    use crate::gguf::testing::{strings, write};

    fn ints(items: &[i32]) -> Value {
        Value::Array(items.iter().map(|&v| Value::I32(v)).collect())
    }

    fn tokenizer(dir: &std::path::Path, name: &str, metadata: Vec<(&str, Value)>) -> Tokenizer {
        let path = dir.join(name);
        write(&path, &metadata, &[]);
        build_tokenizer(&GgufFile::open(&path).unwrap())
            .unwrap()
            .unwrap()
    }

    #[test]
    fn sentencepiece_merges_by_score_with_bos_prefix_and_byte_fallback() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = [
            "<unk>", "<s>", "</s>", "<0x7A>", "▁", "a", "b", "ab", "▁ab", "<ctl>", "  ",
        ];
        let tok = tokenizer(
            dir.path(),
            "spm.gguf",
            vec![
                ("tokenizer.ggml.model", Value::String("llama".into())),
                ("tokenizer.ggml.tokens", strings(&tokens)),
                (
                    "tokenizer.ggml.scores",
                    Value::Array(
                        [0., 0., 0., 0., -1., -2., -3., -4., -5., 0., 0.]
                            .map(Value::F32)
                            .to_vec(),
                    ),
                ),
                (
                    "tokenizer.ggml.token_type",
                    ints(&[2, 3, 3, 6, 1, 1, 1, 1, 1, 3, 4]),
                ),
                ("tokenizer.ggml.bos_token_id", Value::U32(1)),
                ("tokenizer.ggml.eos_token_id", Value::U32(2)),
                ("tokenizer.ggml.unknown_token_id", Value::U32(0)),
            ],
        );
        // SentencePiece defaults: BOS and a `▁` prefix.
        assert_eq!(tok.encode("ab ab", true).unwrap(), [1, 8, 8]);
        assert_eq!(tok.encode("ab ab", false).unwrap(), [8, 8]);
        assert_eq!(tok.decode(&[8, 8]).unwrap(), "ab ab");
        // Byte fallback for a character outside the vocabulary; control tokens match verbatim.
        assert_eq!(tok.encode("z<ctl>", false).unwrap(), [4, 3, 9]);
        assert_eq!(tok.decode(&[4, 3]).unwrap(), "z");
        // User-defined tokens (here a run of spaces) are matched in the raw text.
        assert_eq!(tok.encode("a  b", false).unwrap(), [4, 5, 10, 4, 6]);
    }

    #[test]
    fn byte_level_pre_tokenizers_and_control_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = ["a", "b", "ab", "Ġ", "Ġab", "1", "2", "12", "<|end|>"];
        let metadata = |pre: &str| {
            vec![
                ("tokenizer.ggml.model", Value::String("gpt2".into())),
                ("tokenizer.ggml.pre", Value::String(pre.into())),
                ("tokenizer.ggml.tokens", strings(&tokens)),
                (
                    "tokenizer.ggml.token_type",
                    ints(&[1, 1, 1, 1, 1, 1, 1, 1, 3]),
                ),
                ("tokenizer.ggml.merges", strings(&["a b", "Ġ ab", "1 2"])),
                ("tokenizer.ggml.eos_token_id", Value::U32(8)),
            ]
        };
        let plain = tokenizer(dir.path(), "gpt2.gguf", metadata("default"));
        assert_eq!(plain.encode("ab ab<|end|>", true).unwrap(), [2, 4, 8]);
        assert_eq!(plain.decode(&[2, 4, 8]).unwrap(), "ab ab<|end|>");
        assert_eq!(plain.encode("12", true).unwrap(), [7]);
        // `smollm` isolates digits before the byte-level split.
        let smollm = tokenizer(dir.path(), "smollm.gguf", metadata("smollm"));
        assert_eq!(smollm.encode("12", true).unwrap(), [5, 6]);
        assert_eq!(
            tokenizer(dir.path(), "qwen2.gguf", metadata("qwen2"))
                .encode("12ab", true)
                .unwrap(),
            [5, 6, 2]
        );

        // An unknown pre-tokenizer or tokenizer model is an error naming the key.
        let path = dir.path().join("odd.gguf");
        write(&path, &metadata("mystery"), &[]);
        let err = build_tokenizer(&GgufFile::open(&path).unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("tokenizer.ggml.pre") && err.contains("mystery"),
            "{err}"
        );
        let mut no_bos = metadata("default");
        no_bos.push(("tokenizer.ggml.add_bos_token", Value::Bool(true)));
        write(&path, &no_bos, &[]);
        let err = build_tokenizer(&GgufFile::open(&path).unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`tokenizer.ggml.bos_token_id` is missing"),
            "{err}"
        );
        let mut with_eos = metadata("default");
        with_eos.push(("tokenizer.ggml.add_eos_token", Value::Bool(true)));
        assert_eq!(
            tokenizer(dir.path(), "eos.gguf", with_eos)
                .encode("ab", true)
                .unwrap(),
            [2, 8]
        );
        let mut bert = metadata("default");
        bert[0].1 = Value::String("bert".into());
        write(&path, &bert, &[]);
        let err = build_tokenizer(&GgufFile::open(&path).unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("`bert`"), "{err}");
    }
}
