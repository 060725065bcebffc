//! The little-endian words and `u32 len`-prefixed fields that jobs exchange with guests
//! (`sandbox/ABI.md`): one reader and one writer for every batch format.

use super::states::FRESH;

/// The little-endian `u32` at `at`, if the bytes reach that far.
pub(crate) fn word_at(bytes: &[u8], at: usize) -> Option<u32> {
    bytes.get(at..at.checked_add(4)?).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Appends `u32 len` and the bytes.
pub(crate) fn put_field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Reads words and fields in order; every read is `None` once the bytes run out.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    pub(crate) fn word(&mut self) -> Option<u32> {
        let w = word_at(self.bytes, self.at)?;
        self.at += 4;
        Some(w)
    }

    /// A field (`u32 len` and the bytes).
    pub(crate) fn field(&mut self) -> Option<&'a [u8]> {
        let len = self.word()? as usize;
        self.take(len).map(|(at, len)| &self.bytes[at..at + len])
    }

    /// A state: a field, or `FRESH` (`Some(None)`), as (start, length) in the bytes.
    pub(crate) fn state_span(&mut self) -> Option<Option<(usize, usize)>> {
        match self.word()? {
            FRESH => Some(None),
            len => self.take(len as usize).map(Some),
        }
    }

    /// A state: a field, or `FRESH` (`Some(None)`).
    pub(crate) fn state(&mut self) -> Option<Option<&'a [u8]>> {
        let bytes = self.bytes;
        self.state_span().map(|span| span.map(|(at, len)| &bytes[at..at + len]))
    }

    /// The bytes not read yet.
    pub(crate) fn left(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn take(&mut self, len: usize) -> Option<(usize, usize)> {
        let start = self.at;
        (len <= self.left()).then(|| {
            self.at += len;
            (start, len)
        })
    }
}

/// Fields to the end of `bytes`, in groups of `group`, after a `u32` count of groups when
/// `counted`: `None` when the bytes do not split that way or the count disagrees.
pub(crate) fn read_fields(bytes: &[u8], counted: bool, group: usize) -> Option<Vec<&[u8]>> {
    let mut reader = Reader::new(bytes);
    let count = if counted { Some(reader.word()? as usize) } else { None };
    let mut fields = Vec::new();
    while reader.left() > 0 {
        fields.push(reader.field()?);
    }
    let whole = fields.len() % group == 0 && count.is_none_or(|n| n * group == fields.len());
    whole.then_some(fields)
}
