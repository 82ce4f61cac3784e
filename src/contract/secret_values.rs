//! Whether a value read from a Secret can be used as it is: a signing token,
//! a header value. One function each, called by the controller (to report
//! `SecretInvalid`) and the dispatcher (to use the value), so they cannot
//! disagree. Problems never quote the value.

/// Fewest bytes a signing token may have.
pub const MIN_TOKEN_BYTES: usize = 16;
/// Most bytes a signing token may have.
pub const MAX_TOKEN_BYTES: usize = 512;
/// Most bytes a header value from a Secret may have (after one trailing
/// line break is removed): receivers and proxies refuse longer headers,
/// and the caches of both processes hold no more per key.
pub const MAX_HEADER_VALUE_BYTES: usize = 8192;

/// Why a value cannot be used (never the value itself).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValueProblem {
    /// Not UTF-8.
    #[error("is not UTF-8 text")]
    NotUtf8,
    /// A token of the wrong length.
    #[error("holds {0} bytes; a signing token must have {MIN_TOKEN_BYTES} to {MAX_TOKEN_BYTES} bytes")]
    TokenLength(usize),
    /// A header value with a control character (after one trailing line break is removed).
    #[error("holds a control character (only one trailing line break is removed)")]
    ControlCharacter,
    /// A header value over [`MAX_HEADER_VALUE_BYTES`].
    #[error("holds {0} bytes; a header value may have at most {MAX_HEADER_VALUE_BYTES} bytes")]
    HeaderTooLong(usize),
}

/// The signing token in `bytes`: UTF-8 (the HMAC key is its UTF-8 bytes),
/// 16 to 512 bytes.
pub fn signing_token(bytes: &[u8]) -> Result<&str, ValueProblem> {
    let token = std::str::from_utf8(bytes).map_err(|_| ValueProblem::NotUtf8)?;
    if !(MIN_TOKEN_BYTES..=MAX_TOKEN_BYTES).contains(&token.len()) {
        return Err(ValueProblem::TokenLength(token.len()));
    }
    Ok(token)
}

/// The header value in `bytes`: one trailing line break (LF or CRLF, which
/// `kubectl create secret --from-file` leaves from the file) removed, then
/// UTF-8 without control characters (a tab is allowed, as in HTTP).
pub fn header_value(bytes: &[u8]) -> Result<&str, ValueProblem> {
    let bytes = bytes
        .strip_suffix(b"\r\n")
        .or_else(|| bytes.strip_suffix(b"\n"))
        .unwrap_or(bytes);
    if bytes.len() > MAX_HEADER_VALUE_BYTES {
        return Err(ValueProblem::HeaderTooLong(bytes.len()));
    }
    let value = std::str::from_utf8(bytes).map_err(|_| ValueProblem::NotUtf8)?;
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err(ValueProblem::ControlCharacter);
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_must_be_utf8_and_16_to_512_bytes() {
        assert_eq!(signing_token(&[b'a'; 16]), Ok("aaaaaaaaaaaaaaaa"));
        assert!(signing_token(&[b'a'; 512]).is_ok());
        assert_eq!(signing_token(&[b'a'; 15]), Err(ValueProblem::TokenLength(15)));
        assert_eq!(signing_token(&[b'a'; 513]), Err(ValueProblem::TokenLength(513)));
        let mut binary = vec![0xff; 32];
        binary[0] = b'x';
        assert_eq!(signing_token(&binary), Err(ValueProblem::NotUtf8));
    }

    #[test]
    fn a_header_value_loses_one_trailing_line_break_and_refuses_control_characters() {
        assert_eq!(header_value(b"Bearer abc\n"), Ok("Bearer abc"));
        assert_eq!(header_value(b"Bearer abc\r\n"), Ok("Bearer abc"));
        assert_eq!(header_value(b"a\tb"), Ok("a\tb"));
        assert_eq!(header_value(b"Bearer abc\n\n"), Err(ValueProblem::ControlCharacter));
        assert_eq!(header_value(b"a\rb"), Err(ValueProblem::ControlCharacter));
        assert_eq!(header_value(&[0xc3, 0x28]), Err(ValueProblem::NotUtf8));
        let long = vec![b'a'; MAX_HEADER_VALUE_BYTES];
        assert!(header_value(&long).is_ok());
        assert!(
            header_value(&[&long[..], b"\r\n"].concat()).is_ok(),
            "the line break does not count"
        );
        assert_eq!(
            header_value(&[&long[..], b"a"].concat()),
            Err(ValueProblem::HeaderTooLong(MAX_HEADER_VALUE_BYTES + 1))
        );
        // The problem never quotes the value.
        assert!(!ValueProblem::ControlCharacter.to_string().contains("Bearer"));
    }
}
