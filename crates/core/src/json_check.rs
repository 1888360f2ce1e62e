//! A JSON syntax check for event data: is the payload one JSON text (RFC 8259), in UTF-8?
//!
//! Every JSON event is checked on its appender's task before it is queued, so this check is
//! on the path of every append. It only recognises the grammar, in one pass without
//! allocating (below 128 levels of nesting); serde_json, which builds or skips values, is
//! run only on refused input, to say what is wrong and where.
//!
//! It accepts what `serde_json::from_slice::<IgnoredAny>` accepts, except text that is not
//! UTF-8 (serde_json does not check the bytes inside strings it skips). Nesting is not
//! limited, as serde_json does not limit it when skipping. Lone UTF-16 surrogates in `\u`
//! escapes are accepted, as the grammar allows them.

/// True when `bytes` are one JSON value, with optional whitespace around it.
pub(crate) fn is_json(bytes: &[u8]) -> bool {
    Checker { bytes, at: 0 }.text()
}

/// What encloses the value being read: whether each open container is an object. The first
/// 128 levels live in a bit set; deeper ones spill into a vector.
#[derive(Default)]
struct Nesting {
    shallow: u128,
    deep: Vec<bool>,
    depth: usize,
}

impl Nesting {
    fn push(&mut self, object: bool) {
        if self.depth < 128 {
            let bit = 1u128 << self.depth;
            self.shallow = if object {
                self.shallow | bit
            } else {
                self.shallow & !bit
            };
        } else {
            self.deep.push(object);
        }
        self.depth += 1;
    }

    fn pop(&mut self) {
        self.depth -= 1;
        if self.depth >= 128 {
            self.deep.pop();
        }
    }

    /// Whether the innermost open container is an object; `None` at the top level.
    fn innermost_is_object(&self) -> Option<bool> {
        match self.depth {
            0 => None,
            d if d <= 128 => Some(self.shallow & (1u128 << (d - 1)) != 0),
            _ => self.deep.last().copied(),
        }
    }
}

/// A byte a string's fast path stops at: it ends the string, starts an escape, may not
/// appear in a string, or is part of a multi-byte UTF-8 character.
fn is_special(b: u8) -> bool {
    b == b'"' || b == b'\\' || b < 0x20 || !b.is_ascii()
}

/// Flags (by their high bit) the bytes of a little-endian word that are [`is_special`]:
/// nonzero exactly when one is, and its lowest flag is the first special byte's. Each test
/// flags a byte that is zero after the XOR, or below 0x20, among bytes below 0x80 (`& !x`);
/// a borrow may flag bytes above a flagged one, never below. A byte of 0x80 or more has its
/// high bit set already.
fn special_mask(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x;
    let quote = word ^ (ONES * u64::from(b'"'));
    let backslash = word ^ (ONES * u64::from(b'\\'));
    (below(quote, 1) | below(backslash, 1) | below(word, 0x20) | word) & HIGHS
}

/// Whether any byte of a block [`is_special`]. Written as three byte flags folded over the
/// whole block, without early exit, so that the compiler turns it into a few vector
/// compares (SSE2 on x86-64: about 0.7 instructions a byte, against 1.4 for
/// [`special_mask`] per word). A byte of 0x80 or more is negative as an `i8`, so one signed
/// test catches it with the control characters.
fn has_special(block: &[u8; 32]) -> bool {
    let (mut quote, mut backslash, mut control_or_high) = (0u8, 0u8, 0u8);
    for &b in block {
        quote |= u8::from(b == b'"');
        backslash |= u8::from(b == b'\\');
        control_or_high |= u8::from((b as i8) < 0x20);
    }
    (quote | backslash | control_or_high) != 0
}

struct Checker<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Checker<'_> {
    fn text(&mut self) -> bool {
        let mut nesting = Nesting::default();
        loop {
            // A value starts here.
            self.skip_whitespace();
            match self.peek() {
                Some(open @ (b'{' | b'[')) => {
                    self.at += 1;
                    self.skip_whitespace();
                    let object = open == b'{';
                    if self.peek() == Some(if object { b'}' } else { b']' }) {
                        self.at += 1;
                    } else {
                        nesting.push(object);
                        if object && !self.key() {
                            return false;
                        }
                        continue;
                    }
                }
                Some(b'"') => {
                    if !self.string() {
                        return false;
                    }
                }
                Some(b't') => {
                    if !self.literal(b"true") {
                        return false;
                    }
                }
                Some(b'f') => {
                    if !self.literal(b"false") {
                        return false;
                    }
                }
                Some(b'n') => {
                    if !self.literal(b"null") {
                        return false;
                    }
                }
                Some(b'-' | b'0'..=b'9') => {
                    if !self.number() {
                        return false;
                    }
                }
                _ => return false,
            }
            // A value ended: close containers until one goes on with a comma.
            loop {
                self.skip_whitespace();
                let Some(object) = nesting.innermost_is_object() else {
                    return self.at == self.bytes.len();
                };
                match self.peek() {
                    Some(b',') => {
                        self.at += 1;
                        if object && !self.key() {
                            return false;
                        }
                        break;
                    }
                    Some(b'}') if object => {}
                    Some(b']') if !object => {}
                    _ => return false,
                }
                self.at += 1;
                nesting.pop();
            }
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.at += 1;
        }
    }

    /// An object member's key and its colon.
    fn key(&mut self) -> bool {
        self.skip_whitespace();
        if self.peek() != Some(b'"') || !self.string() {
            return false;
        }
        self.skip_whitespace();
        if self.peek() != Some(b':') {
            return false;
        }
        self.at += 1;
        true
    }

    fn literal(&mut self, word: &[u8]) -> bool {
        let found = self.bytes[self.at..].starts_with(word);
        self.at += word.len();
        found
    }

    /// A string, from its opening quote. Its bytes are checked 8 at a time up to the first
    /// [`is_special`] one (a byte at a time costs several times more, and strings are most
    /// of an event); a run of non-ASCII bytes must be UTF-8 by itself, as every byte of a
    /// multi-byte character is.
    fn string(&mut self) -> bool {
        let bytes = self.bytes;
        self.at += 1;
        loop {
            let mut at = self.at;
            // Long runs of plain characters are skipped 32 bytes at a time (one test per
            // block), then the word loop below finds the special byte itself.
            while let Some(block) = bytes.get(at..).and_then(<[u8]>::first_chunk::<32>) {
                if has_special(block) {
                    break;
                }
                at += 32;
            }
            while let Some(word) = bytes
                .get(at..at + 8)
                .and_then(|chunk| <[u8; 8]>::try_from(chunk).ok())
            {
                let mask = special_mask(u64::from_le_bytes(word));
                if mask != 0 {
                    at += mask.trailing_zeros() as usize / 8;
                    break;
                }
                at += 8;
            }
            let Some(special) = bytes[at..].iter().position(|&b| is_special(b)) else {
                return false;
            };
            let start = at + special;
            self.at = start + 1;
            match bytes[start] {
                b'"' => return true,
                b'\\' => {
                    if !self.escape() {
                        return false;
                    }
                }
                0..0x20 => return false,
                _ => {
                    let run = bytes[start..].iter().take_while(|b| !b.is_ascii()).count();
                    if std::str::from_utf8(&bytes[start..start + run]).is_err() {
                        return false;
                    }
                    self.at = start + run;
                }
            }
        }
    }

    /// What follows a backslash in a string.
    fn escape(&mut self) -> bool {
        match self.peek() {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                self.at += 1;
                true
            }
            Some(b'u') => {
                let hex = self.bytes.get(self.at + 1..self.at + 5);
                self.at += 5;
                hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
            }
            _ => false,
        }
    }

    fn number(&mut self) -> bool {
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.peek() {
            Some(b'0') => self.at += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return false,
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            if !self.peek().is_some_and(|b| b.is_ascii_digit()) {
                return false;
            }
            self.digits();
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            if !self.peek().is_some_and(|b| b.is_ascii_digit()) {
                return false;
            }
            self.digits();
        }
        true
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{has_special, is_json, is_special};

    fn serde_accepts(bytes: &[u8]) -> bool {
        serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok()
    }

    /// The check must agree with serde_json on UTF-8 input.
    fn agrees(text: &str) {
        assert_eq!(
            is_json(text.as_bytes()),
            serde_accepts(text.as_bytes()),
            "{text:?}"
        );
    }

    /// The first flagged byte of a word, if any.
    fn first_flagged(word: [u8; 8]) -> Option<usize> {
        let mask = super::special_mask(u64::from_le_bytes(word));
        (mask != 0).then(|| mask.trailing_zeros() as usize / 8)
    }

    #[test]
    fn a_words_mask_finds_its_first_special_byte() {
        let plain = *b"abcdefgh";
        assert_eq!(first_flagged(plain), None);
        assert_eq!(first_flagged(*b" ~!#[]}z"), None);
        assert_eq!(first_flagged(*b"\x7f !/[]^`"), None);
        let specials: Vec<u8> = (0..=255u8).filter(|&b| super::is_special(b)).collect();
        for first in 0..8 {
            for b in 0..=255u8 {
                let mut word = plain;
                word[first] = b;
                let expected = super::is_special(b).then_some(first);
                assert_eq!(first_flagged(word), expected, "{b:#x} at {first}");
                // Whatever follows a special byte, the first one is found.
                if super::is_special(b) {
                    for later in first + 1..8 {
                        for &other in &specials {
                            word[later] = other;
                            assert_eq!(first_flagged(word), Some(first), "{word:?}");
                            word[later] = plain[later];
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn accepts_json_texts() {
        for text in [
            "null",
            " true ",
            "false",
            "0",
            "-0",
            "-12.5e+3",
            "1E-9",
            "\"\"",
            "\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\\u00e9\\uD800\"",
            "[]",
            "{}",
            "[1,[2,[3]],{\"a\":{}}]",
            "{\"a\" : [ true , null ] , \"b\":\"ü\"}",
            "\t\r\n{\"k\":1}\n",
        ] {
            assert!(is_json(text.as_bytes()), "{text:?}");
            agrees(text);
        }
    }

    #[test]
    fn refuses_what_is_not_one_json_text() {
        for text in [
            " ",
            "nul",
            "nulll",
            "truex",
            "01",
            "-",
            "1.",
            ".5",
            "1e",
            "1e+",
            "+1",
            "\"open",
            "\"a\u{1}b\"",
            "\"\\x\"",
            "\"\\u12g4\"",
            "\"\\u12\"",
            "[",
            "[1,]",
            "[1 2]",
            "{\"a\"}",
            "{\"a\":}",
            "{\"a\":1,}",
            "{1:2}",
            "{\"a\":1]",
            "[1}",
            "1 2",
            "{} {}",
            "[1]]",
        ] {
            assert!(!is_json(text.as_bytes()), "{text:?}");
            agrees(text);
        }
    }

    #[test]
    fn refuses_text_that_is_not_utf8() {
        let bytes = b"{\"name\":\"caf\xe9\"}";
        assert!(
            serde_accepts(bytes),
            "serde_json skips the bytes of strings"
        );
        assert!(!is_json(bytes));
        // Truncated, overlong, a surrogate, beyond U+10FFFF, a stray continuation byte; each
        // in a short string, after 8 or more ASCII bytes and after a 32-byte block of them.
        for bad in [
            &b"\xc3"[..],
            b"\xe2\x82",
            b"\xc0\xaf",
            b"\xed\xa0\x80",
            b"\xf4\x90\x80\x80",
            b"\x80",
        ] {
            for before in [
                "",
                "abcdefghijklmnop",
                "abcdefghijklmnopqrstuvwxyz0123456789",
            ] {
                let mut text = format!("[\"{before}").into_bytes();
                text.extend(bad);
                text.extend(b"xyz\"]");
                assert!(!is_json(&text), "{text:?}");
            }
        }
        assert!(is_json("[\"abcdefgh€ü𝄞\"]".as_bytes()));
    }

    #[test]
    fn a_block_has_a_special_byte_exactly_when_one_of_its_bytes_is() {
        for b in 0..=u8::MAX {
            for at in [0, 7, 8, 15, 16, 31] {
                let mut block = [b'a'; 32];
                block[at] = b;
                assert_eq!(has_special(&block), is_special(b), "byte {b:#04x} at {at}");
            }
        }
        assert!(!has_special(&[b' '; 32]));
        assert!(!has_special(&[0x7f; 32]));
    }

    #[test]
    fn nesting_is_not_limited() {
        for depth in [127, 128, 129, 200, 100_000] {
            let text = format!("{}{}", "[{\"a\":".repeat(depth), "}]".repeat(depth));
            assert!(!is_json(text.as_bytes()), "unbalanced at {depth}");
            let text = format!("{}1{}", "[{\"a\":".repeat(depth), "}]".repeat(depth));
            assert!(is_json(text.as_bytes()), "depth {depth}");
            let wrong = format!("{}1{}]", "[{\"a\":".repeat(depth), "}]".repeat(depth));
            assert!(!is_json(wrong.as_bytes()), "extra close at {depth}");
            let crossed = format!("{}1{}", "[{\"a\":".repeat(depth), "]}".repeat(depth));
            assert!(!is_json(crossed.as_bytes()), "crossed at {depth}");
        }
    }

    /// Every prefix and every one-byte change of some JSON texts, checked against serde_json.
    #[test]
    fn agrees_with_serde_json_on_every_prefix_and_one_byte_change() {
        let texts = [
            r#"{"order":42,"lines":[{"sku":"A-1","qty":2,"price":-19.99e-2}],"ok":true,"note":null,"s":"\u00e9\n"}"#,
            r#"[[],{},[{}],"x",0,-0.5,1E+2,false]"#,
            // Long strings: their bytes are checked 8 at a time.
            r#"{"long":"abcdefghijklmnopqrstuvwxyz0123456789 ünïcödé "quoted" \ \/ € tab	end","k":"ABCDEFGHIJKLMNOPQRSTUVWXYZ"}"#,
        ];
        let replacements = b" \t\n\"\\/{}[],:0123456789-+.eEabfnrtuxl\x01\x7f";
        for text in texts {
            let bytes = text.as_bytes();
            for end in 0..=bytes.len() {
                agrees(std::str::from_utf8(&bytes[..end]).unwrap_or_default());
            }
            for at in 0..bytes.len() {
                for &b in replacements {
                    let mut changed = bytes.to_vec();
                    changed[at] = b;
                    agrees(std::str::from_utf8(&changed).unwrap_or_default());
                    changed.remove(at);
                    agrees(std::str::from_utf8(&changed).unwrap_or_default());
                    let mut inserted = bytes.to_vec();
                    inserted.insert(at, b);
                    agrees(std::str::from_utf8(&inserted).unwrap_or_default());
                }
            }
        }
    }

    use proptest::prelude::Just;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]

        /// Short texts over JSON's own characters hit its grammar's corners more often than
        /// arbitrary bytes.
        #[test]
        fn agrees_with_serde_json_on_jsonish_texts(text in r#"[ \t\n"\\/{}\[\],:0-9.eE+\-truefalsn\x01]{0,40}"#) {
            agrees(&text);
        }

        #[test]
        fn agrees_with_serde_json_on_any_text(text in ".{0,24}") {
            agrees(&text);
        }

        /// Any bytes in a string, mostly non-ASCII: accepted exactly when serde_json accepts
        /// them and they are UTF-8.
        #[test]
        fn a_string_is_accepted_exactly_when_it_is_utf8(
            inside in proptest::collection::vec(
                proptest::prop_oneof![0x80u8..=0xff, 0x20u8..0x80, Just(b'"'), Just(b'\\')],
                0..40,
            )
        ) {
            let mut text = b"[\"".to_vec();
            text.extend(&inside);
            text.extend(b"\"]");
            let expected = serde_accepts(&text) && std::str::from_utf8(&text).is_ok();
            proptest::prop_assert_eq!(is_json(&text), expected, "{:?}", text);
        }
    }
}
