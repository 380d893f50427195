//! Character-level text corpora: vocabulary, encoding, the 90/10 split,
//! the shared Shakespeare text and malformed input.

mod data_support;
mod support;

use data_support::shared_dataset;
use nets::data::text::find_text_file;
use nets::data::{load_text, CharCorpus, DataError};
use rand::Rng;
use std::path::Path;
use support::test_rng;

#[test]
fn corpus_vocab_is_sorted_distinct_chars_and_the_split_is_90_10_in_order() {
    let mut rng = test_rng("corpus_vocab_is_sorted_distinct_chars");
    let alphabet: Vec<char> = "abcdefgh \nXYZæéß€,.".chars().collect();
    let n = rng.gen_range(10..2000);
    let text: String = (0..n)
        .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
        .collect();
    let corpus = CharCorpus::from_text(&text, Path::new("random.txt")).unwrap();
    let mut expected: Vec<char> = text.chars().collect();
    expected.sort();
    expected.dedup();
    assert_eq!(corpus.vocab, expected);
    assert_eq!(corpus.valid.len(), n / 10);
    assert_eq!(corpus.train.len(), n - n / 10);
    let mut all = corpus.train.clone();
    all.extend(&corpus.valid);
    assert_eq!(corpus.decode(&all), text);
    assert_eq!(corpus.encode(&text), Some(all));
    assert_eq!(corpus.encode("\u{1F600}"), None);
}

#[test]
fn shared_shakespeare_has_79_distinct_characters() {
    let Some(dir) = shared_dataset("shakespeare") else {
        return;
    };
    let path = find_text_file(&dir).unwrap();
    let corpus = load_text(&path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let chars = text.chars().count();
    assert_eq!(corpus.vocab_size(), 79);
    assert_eq!(corpus.train.len() + corpus.valid.len(), chars);
    assert_eq!(corpus.valid.len(), chars / 10);
    assert!(corpus.vocab.contains(&'æ'));
}

#[test]
fn invalid_utf8_is_an_error_naming_the_file_and_offset() {
    let mut rng = test_rng("invalid_utf8");
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("bad.txt");
    let offset = rng.gen_range(0..100);
    let mut bytes = vec![b'a'; 200];
    bytes[offset] = 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let err = load_text(&path).unwrap_err();
    eprintln!("{err}");
    assert!(
        matches!(err, DataError::NotUtf8 { offset: o, .. } if o == offset),
        "{err:?}"
    );
    assert!(err.to_string().contains("bad.txt"));
}

#[test]
fn text_too_short_to_split_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("short.txt");
    std::fs::write(&path, "to be").unwrap();
    let err = load_text(&path).unwrap_err();
    assert!(
        matches!(err, DataError::TextTooShort { chars: 5, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("short.txt"));
}

#[test]
fn missing_text_file_is_an_error_naming_both_accepted_names() {
    let tmp = tempfile::tempdir().unwrap();
    let err = find_text_file(tmp.path()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("first-folio.txt") && msg.contains("input.txt"),
        "{msg}"
    );
}
