//! CLIP's tokenizer against ids computed by an independent implementation (OpenCLIP's
//! `SimpleTokenizer` algorithm in Python with the `regex` module, on the same vocabulary
//! file), from both vocabulary sources.
//!
//! Needs CLIP's vocabulary (`scripts/fetch-models.sh`).
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use aura_image::{CONTEXT_LENGTH, ClipTokenizer};

fn check(tok: &ClipTokenizer) {
    let cases: &[(&str, &[u32])] = &[
        ("a photo of a cat", &[320, 1125, 539, 320, 2368]),
        (
            "An astronaut riding a horse on Mars, 4k, highly detailed!!",
            &[
                550, 18376, 6765, 320, 4558, 525, 7496, 267, 275, 330, 267, 5302, 12609, 748,
            ],
        ),
        (
            "  Ünïcödé   naïve café — 日本語 テスト 123 it's   ",
            &[
                6522, 77, 35689, 66, 7255, 67, 4166, 1097, 35689, 563, 15304, 2005, 39121, 44353,
                34002, 508, 2429, 228, 32421, 486, 272, 273, 274, 585, 568,
            ],
        ),
        // The end token written in the text is the end token, as in OpenCLIP.
        ("<|endoftext|>x", &[49407, 343]),
        ("", &[]),
    ];
    for (text, want) in cases {
        assert_eq!(tok.encode(text), *want, "{text:?}");
    }
    assert_eq!(
        (tok.bos(), tok.eos(), tok.vocab_size()),
        (49406, 49407, 49408)
    );
    let padded = tok.encode_padded("a photo of a cat", 0);
    assert_eq!(padded.len(), CONTEXT_LENGTH);
    assert_eq!(&padded[..7], &[49406, 320, 1125, 539, 320, 2368, 49407]);
    assert!(padded[7..].iter().all(|&p| p == 0));
    // Long prompts keep 75 tokens between the start and end tokens.
    let long = tok.encode_padded(&"cat ".repeat(200), 49407);
    assert_eq!(long.len(), CONTEXT_LENGTH);
    assert_eq!((long[0], long[75], long[76]), (49406, 2368, 49407));
}

#[test]
fn the_bpe_file_tokenizes_like_open_clip() {
    check(&ClipTokenizer::from_bpe_gz(&support::vocab_path()).unwrap());
}

#[test]
fn a_diffusers_tokenizer_folder_tokenizes_the_same() {
    let dir = tempfile::tempdir().unwrap();
    support::write_diffusers(dir.path(), support::Tiny::Sd15, 1);
    let t = dir.path().join("tokenizer");
    check(&ClipTokenizer::from_vocab_merges(&t.join("vocab.json"), &t.join("merges.txt")).unwrap());
}

#[test]
fn broken_vocabularies_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("v.txt.gz");
    std::fs::write(&p, b"not gzip").unwrap();
    assert!(ClipTokenizer::from_bpe_gz(&p).is_err());
    assert!(ClipTokenizer::from_bpe_gz(&dir.path().join("missing.gz")).is_err());
    let (v, m) = (dir.path().join("vocab.json"), dir.path().join("merges.txt"));
    std::fs::write(&v, br#"{"a": 0}"#).unwrap();
    std::fs::write(&m, "#version: 0.2\na b\n").unwrap();
    let err = ClipTokenizer::from_vocab_merges(&v, &m).unwrap_err();
    assert!(err.to_string().contains("startoftext"), "{err}");
}
