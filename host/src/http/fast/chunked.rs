//! Finding the end of a chunked body (RFC 9112 section 7.1) in bytes fed
//! in order, without changing them, and refusing every framing that two
//! parsers could read differently.
//!
//! The fast path relays chunked bodies byte for byte in both directions,
//! so the proxy and the next hop must agree on where the body ends. Only
//! the strict grammar is accepted:
//! - a chunk size is 1 to 16 hex digits, then optional extensions that
//!   start with `;` (or blanks, RFC 9112's BWS) and hold visible ASCII,
//!   blanks and obs-text only, then CRLF; a size line is at most
//!   [`MAX_SIZE_LINE`] bytes;
//! - chunk data is followed by exactly CRLF;
//! - trailer lines are `name: value` lines ending in CRLF, at most
//!   [`MAX_TRAILERS`] bytes in all;
//! - every line ends in CRLF: a bare LF or a CR not followed by LF is an
//!   error (a lenient parser behind the proxy could end the body there).
//!
//! So `x5` (no digit), `5 5`, `+5`, a lone `\n` and an overlong size are
//! errors, not bodies.

/// Longest chunk-size line (size, extensions, CRLF).
pub const MAX_SIZE_LINE: usize = 4096;

/// Most bytes of trailer lines after the last chunk.
pub const MAX_TRAILERS: usize = 16 * 1024;

/// Scans a chunked body; see the module docs.
#[derive(Debug, Default)]
pub struct ChunkScanner {
    state: State,
    size: u64,
    digits: u8,
    /// Bytes of the current size line, or of the trailers.
    line: usize,
    /// The current trailer line has its colon.
    colon: bool,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the hex size.
    #[default]
    Size,
    /// Blanks after the size, before `;` or CR.
    SizeBlank,
    /// After `;`: extensions until CR.
    Extension,
    /// The LF of a size line.
    SizeLf,
    /// `size` data bytes left.
    Data,
    /// The CR after the data.
    DataCr,
    /// The LF after the data.
    DataLf,
    /// After the last chunk: at the start of a trailer line (or the end).
    TrailerStart,
    /// Inside a trailer line.
    Trailer,
    /// The LF of a trailer line.
    TrailerLf,
    /// The final LF.
    FinalLf,
}

impl ChunkScanner {
    /// Scans `bytes`, the next part of the body: `Some(n)` when the body
    /// ends after `n` of them.
    pub fn scan(&mut self, bytes: &[u8]) -> Result<Option<usize>, &'static str> {
        let mut i = 0;
        while i < bytes.len() {
            if self.state == State::Data {
                let take = self.size.min((bytes.len() - i) as u64);
                self.size -= take;
                i += take as usize;
                if self.size == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            let b = bytes[i];
            i += 1;
            if self.step(b)? {
                return Ok(Some(i));
            }
        }
        Ok(None)
    }

    /// One framing byte; true at the end of the body.
    fn step(&mut self, b: u8) -> Result<bool, &'static str> {
        use State::*;
        match self.state {
            Size => self.size_byte(b)?,
            SizeBlank => match b {
                b' ' | b'\t' => self.count_line()?,
                b';' => {
                    self.state = Extension;
                    self.count_line()?;
                }
                b'\r' => self.state = SizeLf,
                _ => return Err("invalid byte after a chunk size"),
            },
            Extension => match b {
                b'\r' => self.state = SizeLf,
                b'\t' | b' '..=b'~' | 0x80..=0xff => self.count_line()?,
                _ => return Err("invalid byte in a chunk extension"),
            },
            SizeLf => {
                if b != b'\n' {
                    return Err("chunk size line without CRLF");
                }
                self.line = 0;
                self.state = if self.size == 0 { TrailerStart } else { Data };
            }
            DataCr if b == b'\r' => self.state = DataLf,
            DataLf if b == b'\n' => {
                self.state = Size;
                self.digits = 0;
            }
            DataCr | DataLf => return Err("chunk data not followed by CRLF"),
            TrailerStart => match b {
                b'\r' => self.state = FinalLf,
                _ if is_token_byte(b) => {
                    self.colon = false;
                    self.state = Trailer;
                    self.count_trailer()?;
                }
                _ => return Err("invalid trailer line"),
            },
            Trailer => match b {
                b'\r' if self.colon => self.state = TrailerLf,
                b':' => self.colon = true,
                _ if self.colon && matches!(b, b'\t' | b' '..=b'~' | 0x80..=0xff) => {}
                _ if !self.colon && is_token_byte(b) => {}
                _ => return Err("invalid trailer line"),
            },
            TrailerLf if b == b'\n' => self.state = TrailerStart,
            TrailerLf => return Err("trailer line without CRLF"),
            FinalLf if b == b'\n' => return Ok(true),
            FinalLf => return Err("invalid end of chunked body"),
            Data => unreachable!("data bytes are skipped in bulk"),
        }
        if matches!(self.state, Trailer | TrailerLf) {
            self.count_trailer()?;
        }
        Ok(false)
    }

    fn size_byte(&mut self, b: u8) -> Result<(), &'static str> {
        if let Some(digit) = (b as char).to_digit(16) {
            if self.digits == 16 {
                return Err("chunk size too large");
            }
            self.digits += 1;
            self.size = (self.size << 4) | u64::from(digit);
            return self.count_line();
        }
        if self.digits == 0 {
            return Err("chunk size line without a size");
        }
        match b {
            b'\r' => self.state = State::SizeLf,
            b';' => {
                self.state = State::Extension;
                self.count_line()?;
            }
            b' ' | b'\t' => {
                self.state = State::SizeBlank;
                self.count_line()?;
            }
            _ => return Err("invalid byte after a chunk size"),
        }
        Ok(())
    }

    fn count_line(&mut self) -> Result<(), &'static str> {
        self.line += 1;
        match self.line > MAX_SIZE_LINE {
            true => Err("chunk size line too long"),
            false => Ok(()),
        }
    }

    fn count_trailer(&mut self) -> Result<(), &'static str> {
        self.line += 1;
        match self.line > MAX_TRAILERS {
            true => Err("chunked trailers too large"),
            false => Ok(()),
        }
    }
}

/// A byte of an RFC 9110 token (a header name).
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_in_pieces(body: &[u8], piece: usize) -> Result<Option<usize>, &'static str> {
        let mut scanner = ChunkScanner::default();
        let mut offset = 0;
        for part in body.chunks(piece) {
            if let Some(end) = scanner.scan(part)? {
                return Ok(Some(offset + end));
            }
            offset += part.len();
        }
        Ok(None)
    }

    #[test]
    fn the_end_of_a_chunked_body_is_found_in_any_split() {
        let body = b"5\r\nhello\r\n1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
        let end = body.len() - 4;
        for piece in 1..body.len() {
            assert_eq!(
                scan_in_pieces(body, piece),
                Ok(Some(end)),
                "pieces of {piece}"
            );
        }
        assert_eq!(scan_in_pieces(b"0\r\n\r\n", 64), Ok(Some(5)));
        assert_eq!(scan_in_pieces(b"000 ; a=\"b c\"\r\n\r\n", 64), Ok(Some(17)));
        assert_eq!(scan_in_pieces(b"3\r\nabc\r\n", 64), Ok(None));
        assert_eq!(
            scan_in_pieces(b"A\r\n0123456789\r\n0\r\n\r\n", 64),
            Ok(Some(20))
        );
    }

    #[test]
    fn ambiguous_chunked_framing_is_an_error_in_any_split() {
        for bad in [
            &b"x5\r\nhello\r\n0\r\n\r\n"[..],
            b"+5\r\nhello\r\n0\r\n\r\n",
            b"5 5\r\nhello\r\n0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"5\r\nhelloX\r\n0\r\n\r\n",
            b"5\rhello\r\n0\r\n\r\n",
            b"0\r\n\rX",
            b"0\r\n\n",
            b"0\r\nX-T: 1\n\r\n",
            b"0\r\nno colon\r\n\r\n",
            b"0\r\n: empty name\r\n\r\n",
            b"\r\n",
            b"ffffffffffffffffff\r\n",
            b"5;a\x01\r\nhello\r\n0\r\n\r\n",
        ] {
            for piece in 1..=bad.len() {
                assert!(
                    scan_in_pieces(bad, piece).is_err(),
                    "{:?} in pieces of {piece}",
                    String::from_utf8_lossy(bad)
                );
            }
        }
    }

    #[test]
    fn size_lines_and_trailers_are_bounded() {
        let mut long = b"5;".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_SIZE_LINE));
        assert_eq!(scan_in_pieces(&long, 7), Err("chunk size line too long"));
        let mut trailers = b"0\r\n".to_vec();
        while trailers.len() < MAX_TRAILERS + 64 {
            trailers.extend_from_slice(b"X-Long: aaaaaaaaaaaaaaaa\r\n");
        }
        assert_eq!(
            scan_in_pieces(&trailers, 100),
            Err("chunked trailers too large")
        );
        let sixteen = b"ffffffffffffffff\r\n";
        assert_eq!(scan_in_pieces(sixteen, 3), Ok(None), "16 digits fit a u64");
    }
}
