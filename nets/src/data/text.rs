//! Plain UTF-8 text for character-level language models.
//!
//! The vocabulary is the sorted set of distinct characters (Unicode scalar
//! values) of the whole text, so ids are stable for a given corpus; the text
//! is split at 90% of its characters into training and validation parts,
//! contiguous and in order (the validation text is the last tenth), as in
//! Karpathy's char-rnn / nanoGPT character-level Shakespeare set-up.

use std::path::{Path, PathBuf};

use super::{read_file, DataError, Result};

/// Fraction of the characters, taken from the end, held out for validation.
pub const VALID_FRACTION_TENTHS: usize = 1;

/// File names accepted in a `shakespeare/` folder, in order of preference:
/// the First Folio of the shared datasets, then char-rnn's `input.txt`
/// (what `approxtrain data fetch shakespeare` writes).
pub const SHAKESPEARE_FILES: [&str; 2] = ["first-folio.txt", "input.txt"];

/// A character-level corpus: vocabulary and the encoded splits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CharCorpus {
    /// Distinct characters, sorted; id i is `vocab[i]`.
    pub vocab: Vec<char>,
    /// The first 90% of the text, as ids.
    pub train: Vec<u32>,
    /// The last 10% of the text, as ids.
    pub valid: Vec<u32>,
}

impl CharCorpus {
    /// Builds the vocabulary of `text` and splits it 90/10; `path` only names
    /// the source in errors. Needs at least 10 characters so that both
    /// parts are non-empty.
    pub fn from_text(text: &str, path: &Path) -> Result<Self> {
        let chars: Vec<char> = text.chars().collect();
        let n_valid = chars.len() * VALID_FRACTION_TENTHS / 10;
        if n_valid == 0 {
            return Err(DataError::TextTooShort {
                path: path.to_path_buf(),
                chars: chars.len(),
            });
        }
        let mut vocab = chars.clone();
        vocab.sort_unstable();
        vocab.dedup();
        let id = |c: &char| vocab.binary_search(c).expect("vocab holds every char") as u32;
        let ids: Vec<u32> = chars.iter().map(id).collect();
        let split = ids.len() - n_valid;
        Ok(CharCorpus {
            train: ids[..split].to_vec(),
            valid: ids[split..].to_vec(),
            vocab,
        })
    }

    /// Number of distinct characters.
    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    /// Ids of `s`, or `None` if it holds a character outside the vocabulary.
    pub fn encode(&self, s: &str) -> Option<Vec<u32>> {
        s.chars()
            .map(|c| self.vocab.binary_search(&c).ok().map(|i| i as u32))
            .collect()
    }

    /// The text of `ids`; ids outside the vocabulary become U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> String {
        ids.iter()
            .map(|&i| {
                self.vocab
                    .get(i as usize)
                    .copied()
                    .unwrap_or(char::REPLACEMENT_CHARACTER)
            })
            .collect()
    }
}

/// Reads a UTF-8 text file into a [`CharCorpus`].
pub fn load_text(path: &Path) -> Result<CharCorpus> {
    let bytes = read_file(
        path,
        "pass the path of a UTF-8 text file, or fetch one with `approxtrain data fetch shakespeare`",
    )?;
    let text = String::from_utf8(bytes).map_err(|e| DataError::NotUtf8 {
        path: path.to_path_buf(),
        offset: e.utf8_error().valid_up_to(),
    })?;
    CharCorpus::from_text(&text, path)
}

/// The corpus file of a `shakespeare/` folder: the first of
/// [`SHAKESPEARE_FILES`] present.
pub fn find_text_file(dir: &Path) -> Result<PathBuf> {
    SHAKESPEARE_FILES
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
        .ok_or_else(|| DataError::Missing {
            path: dir.join(SHAKESPEARE_FILES[0]),
            hint: format!(
                "neither {} nor {} is there; fetch it with `approxtrain data fetch shakespeare` \
                 or pass --data-dir",
                SHAKESPEARE_FILES[0], SHAKESPEARE_FILES[1]
            ),
        })
}
