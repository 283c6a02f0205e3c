//! MCP's stdio framing: one JSON-RPC message per line, newline-delimited, with a bound on
//! a line's length so that a peer cannot make the reader buffer without end.

use tokio::io::{AsyncBufRead, AsyncBufReadExt as _};

/// What reading one line gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A line without its newline (a trailing `\r` is dropped too).
    Line(Vec<u8>),
    /// A line longer than the bound; it was read to its end and dropped.
    TooLarge,
    /// The stream ended (a partial last line is dropped: it is no complete message).
    Eof,
}

/// Reads the next non-empty line of at most `max` bytes.
pub async fn read_frame<R: AsyncBufRead + Unpin>(r: &mut R, max: usize) -> std::io::Result<Frame> {
    let mut line = Vec::new();
    let mut too_large = false;
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            return Ok(Frame::Eof);
        }
        let (chunk, end) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        if !too_large {
            if line.len() + chunk.len() > max {
                too_large = true;
                line = Vec::new();
            } else {
                line.extend_from_slice(chunk);
            }
        }
        let consumed = end.unwrap_or(buf.len());
        r.consume(consumed);
        if end.is_some() {
            if too_large {
                return Ok(Frame::TooLarge);
            }
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                line.clear();
                continue;
            }
            return Ok(Frame::Line(line));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_bounded_and_blank_lines_skipped() {
        let input = b"{\"a\":1}\r\n\n  \nxxxxxxxxxxxxxxxxxxxx\n{}\npartial".to_vec();
        let mut r = tokio::io::BufReader::with_capacity(4, &input[..]);
        let mut got = Vec::new();
        loop {
            match read_frame(&mut r, 10).await.unwrap_or(Frame::Eof) {
                Frame::Eof => break,
                f => got.push(f),
            }
        }
        assert_eq!(
            got,
            [
                Frame::Line(b"{\"a\":1}".to_vec()),
                Frame::TooLarge,
                Frame::Line(b"{}".to_vec())
            ]
        );
    }
}
