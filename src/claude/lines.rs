//! Line framing of a child's stdout.
//!
//! The Claude Code CLI in `--output-format stream-json` mode writes one JSON object per line, and
//! a line can be megabytes long (a file or an image that a tool read, DESIGN §6). So the framing
//! has **no small cap**: a line of any size up to a hard cap passes whole, however the pipe
//! happened to split it, including a UTF-8 character cut across two reads. A line over the hard
//! cap is reported as [`Line::Oversized`] with its length, and its bytes are dropped as they arrive
//! (never buffered), so one runaway line costs no more memory than the cap.
//!
//! Why a hand-rolled reader rather than `tokio::io::AsyncBufReadExt::read_until` or
//! `tokio_util::codec::LinesCodec`: `read_until` appends into a `Vec` with no cap, and copies the
//! line out of the `BufReader`; `LinesCodec` caps, but then yields an error and needs UTF-8.
//! Here a line is read into one [`BytesMut`] and handed out with `split_to().freeze()`, so a line
//! is copied once (pipe → buffer) and then shared as [`Bytes`] by whoever frames it.
//!
//! Memory note: a frozen line shares its allocation with its neighbours. The buffer grows only
//! when its spare room runs low, so consecutive small lines are packed into one 64 KiB allocation
//! (rather than one allocation per read, as a child streaming a line per write would otherwise
//! cause), and a window of recent lines, such as a replay ring, pins about its own size plus one
//! read buffer. After a large line the reader moves the small leftover into a fresh buffer, so the
//! lines that follow a multi-megabyte one do not pin its allocation. Reading a line close to the
//! cap can briefly take up to twice the cap, as the buffer doubles.

use std::io;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Default hard cap on one line, in bytes (64 MiB): far above any line the CLI writes in practice
/// (an image read by a tool is a few MiB of base64), low enough that a runaway child cannot make
/// the daemon buffer without bound.
pub const DEFAULT_MAX_LINE_BYTES: usize = 64 * 1024 * 1024;

/// How much spare room, in bytes, is reserved before each read. A pipe hands over at most 64 KiB
/// per read on Linux, so a larger reservation would sit unused.
const READ_CHUNK: usize = 64 * 1024;

/// Spare room, in bytes, below which the buffer is grown before a read: enough for a typical
/// `stream_event` line, small enough that little of an allocation goes unused.
const MIN_SPARE: usize = 4 * 1024;

/// Buffer capacity, in bytes, above which the leftover after a line is moved to a fresh buffer
/// (see the module doc's memory note).
const SHRINK_ABOVE: usize = 4 * READ_CHUNK;

/// One item of a child's stdout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A whole line without its `\n` (nor a `\r` before it). Never empty: empty lines are
    /// skipped. The bytes are not checked for UTF-8.
    Complete(Bytes),
    /// A line longer than the reader's cap. Its bytes were discarded.
    Oversized {
        /// The line's length in bytes, without the `\n`.
        len: usize,
    },
}

/// Reads newline-delimited lines from an [`AsyncRead`], typically a child's stdout.
///
/// `next_line` is cancel-safe: every bit of progress lives in the reader, so it can be a branch
/// of `tokio::select!` and a cancelled call loses no bytes.
#[derive(Debug)]
pub struct LineReader<R> {
    reader: R,
    buf: BytesMut,
    /// Prefix of `buf` already searched for `\n`, so a long line is scanned once, not once per
    /// read.
    scanned: usize,
    /// `Some(n)` while dropping an over-long line, `n` being the bytes dropped so far.
    discarding: Option<usize>,
    max_line_bytes: usize,
    eof: bool,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    /// Wraps `reader`. A line whose length without the `\n` exceeds `max_line_bytes` comes out as
    /// [`Line::Oversized`]; use [`DEFAULT_MAX_LINE_BYTES`] unless configured otherwise. A cap of 0
    /// is treated as 1.
    pub fn new(reader: R, max_line_bytes: usize) -> Self {
        Self {
            reader,
            buf: BytesMut::with_capacity(READ_CHUNK),
            scanned: 0,
            discarding: None,
            max_line_bytes: max_line_bytes.max(1),
            eof: false,
        }
    }

    /// The next non-empty line, or `None` once the reader is at EOF and every line was handed
    /// out. A last line without a trailing newline is still returned.
    ///
    /// # Errors
    /// Any error of the underlying reader. The reader's state stays consistent, so the caller may
    /// call again.
    pub async fn next_line(&mut self) -> io::Result<Option<Line>> {
        loop {
            if let Some(line) = self.take_buffered() {
                return Ok(Some(line));
            }
            if self.eof {
                return Ok(self.take_at_eof());
            }
            if self.buf.capacity() - self.buf.len() < MIN_SPARE {
                self.buf.reserve(READ_CHUNK);
            }
            if self.reader.read_buf(&mut self.buf).await? == 0 {
                self.eof = true;
            }
        }
    }

    /// Consumes the wrapped reader, dropping anything buffered.
    pub fn into_inner(self) -> R {
        self.reader
    }

    /// A line from what is already buffered, if one is complete or proven over the cap.
    fn take_buffered(&mut self) -> Option<Line> {
        loop {
            let newline = find_newline(&self.buf[self.scanned..]).map(|i| self.scanned + i);
            if let Some(dropped) = self.discarding {
                match newline {
                    Some(pos) => {
                        self.buf.advance(pos + 1);
                        self.scanned = 0;
                        self.discarding = None;
                        self.shrink_if_large();
                        return Some(Line::Oversized { len: dropped + pos });
                    }
                    None => {
                        self.discarding = Some(dropped + self.buf.len());
                        self.buf.clear();
                        self.scanned = 0;
                        return None;
                    }
                }
            }
            match newline {
                Some(pos) if pos > self.max_line_bytes => {
                    self.buf.advance(pos + 1);
                    self.scanned = 0;
                    self.shrink_if_large();
                    return Some(Line::Oversized { len: pos });
                }
                Some(pos) => {
                    let mut line = self.buf.split_to(pos + 1);
                    self.scanned = 0;
                    line.truncate(strip_eol(&line));
                    self.shrink_if_large();
                    if line.is_empty() {
                        continue;
                    }
                    return Some(Line::Complete(line.freeze()));
                }
                None if self.buf.len() > self.max_line_bytes => {
                    // Over the cap with no end in sight: stop buffering and count instead.
                    self.discarding = Some(self.buf.len());
                    self.buf = BytesMut::with_capacity(READ_CHUNK);
                    self.scanned = 0;
                    return None;
                }
                None => {
                    self.scanned = self.buf.len();
                    return None;
                }
            }
        }
    }

    /// The unterminated last line, once the reader hit EOF.
    fn take_at_eof(&mut self) -> Option<Line> {
        if let Some(dropped) = self.discarding.take() {
            let len = dropped + self.buf.len();
            self.buf.clear();
            return Some(Line::Oversized { len });
        }
        let mut line = self.buf.split();
        self.scanned = 0;
        line.truncate(strip_eol(&line));
        (!line.is_empty()).then(|| Line::Complete(line.freeze()))
    }

    /// Moves the leftover of a grown buffer into a fresh one: see the module doc's memory note.
    fn shrink_if_large(&mut self) {
        if self.buf.capacity() > SHRINK_ABOVE && self.buf.len() <= READ_CHUNK {
            let mut fresh = BytesMut::with_capacity(READ_CHUNK.max(self.buf.len()));
            fresh.extend_from_slice(&self.buf);
            self.buf = fresh;
        }
    }
}

/// Length of `line` without its trailing `\n` and one `\r` before it.
fn strip_eol(line: &[u8]) -> usize {
    let mut end = line.len();
    if end > 0 && line[end - 1] == b'\n' {
        end -= 1;
    }
    if end > 0 && line[end - 1] == b'\r' {
        end -= 1;
    }
    end
}

/// Index of the first `\n` in `hay`.
///
/// `memchr` is only a transitive dependency, and `iter().position` goes a byte at a time, which
/// shows on multi-megabyte lines; this tests eight bytes per step (the classic "has zero byte"
/// bit trick on `word ^ 0x0a0a…`), in safe code.
fn find_newline(hay: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    const NL: u64 = LO * b'\n' as u64;
    let mut chunks = hay.chunks_exact(8);
    let mut offset = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_ne_bytes(word) ^ NL;
        if x.wrapping_sub(LO) & !x & HI != 0 {
            // The trick flags a word only if it holds a `\n` (though the flagged bit may sit
            // above the true one), so this search always finds it.
            if let Some(i) = chunk.iter().position(|&b| b == b'\n') {
                return Some(offset + i);
            }
        }
        offset += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == b'\n')
        .map(|i| offset + i)
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use tokio::io::ReadBuf;

    use super::*;

    /// Hands out pre-cut chunks, one per `poll_read`, to force every read split a test wants.
    struct Chunks(VecDeque<Vec<u8>>);

    impl AsyncRead for Chunks {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if let Some(mut chunk) = self.0.pop_front() {
                let n = chunk.len().min(buf.remaining());
                buf.put_slice(&chunk[..n]);
                if n < chunk.len() {
                    chunk.drain(..n);
                    self.0.push_front(chunk);
                }
            }
            Poll::Ready(Ok(()))
        }
    }

    /// Empty parts are dropped: an empty read means EOF.
    fn chunks(parts: &[&[u8]]) -> Chunks {
        Chunks(
            parts
                .iter()
                .filter(|p| !p.is_empty())
                .map(|p| p.to_vec())
                .collect(),
        )
    }

    async fn collect<R: AsyncRead + Unpin>(reader: R, cap: usize) -> Vec<Line> {
        let mut lines = LineReader::new(reader, cap);
        let mut out = Vec::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            out.push(line);
        }
        out
    }

    fn complete(s: &[u8]) -> Line {
        Line::Complete(Bytes::copy_from_slice(s))
    }

    #[test]
    fn find_newline_matches_naive_search() {
        let mut hay = vec![b'a'; 40];
        assert_eq!(find_newline(&hay), None);
        for i in 0..hay.len() {
            hay[i] = b'\n';
            assert_eq!(find_newline(&hay), Some(i), "newline at {i}");
            for (j, byte) in hay.iter_mut().enumerate().skip(i + 1) {
                *byte = [b'\x0b', b'\x8a', b'\x09', 0xff][j % 4];
            }
            assert_eq!(
                find_newline(&hay),
                Some(i),
                "newline at {i} with noise after"
            );
            hay = vec![b'a'; 40];
        }
        // Bytes just around 0x0a, which the bit trick must not mistake for it.
        let noise: Vec<u8> = (0u8..=255).filter(|&b| b != b'\n').collect();
        assert_eq!(find_newline(&noise), None);
    }

    #[tokio::test]
    async fn split_at_every_byte_position() {
        let input = "{\"a\":\"héllo 🦀\"}\r\n\n{\"b\":2}\nlast".as_bytes();
        let expected = vec![
            complete("{\"a\":\"héllo 🦀\"}".as_bytes()),
            complete(b"{\"b\":2}"),
            complete(b"last"),
        ];
        for i in 0..=input.len() {
            let got = collect(chunks(&[&input[..i], &input[i..]]), 1024).await;
            assert_eq!(got, expected, "split at {i}");
            for j in i..=input.len() {
                let got = collect(chunks(&[&input[..i], &input[i..j], &input[j..]]), 1024).await;
                assert_eq!(got, expected, "split at {i} and {j}");
            }
        }
    }

    #[tokio::test]
    async fn one_byte_reads() {
        let input = "é\n🦀\n".as_bytes();
        let parts: Vec<&[u8]> = input.chunks(1).collect();
        let got = collect(chunks(&parts), 1024).await;
        assert_eq!(
            got,
            vec![complete("é".as_bytes()), complete("🦀".as_bytes())]
        );
    }

    #[tokio::test]
    async fn multibyte_char_across_a_read_comes_out_whole() {
        let line = "x🦀y";
        let bytes = line.as_bytes();
        // Cut inside the crab (bytes 1..5).
        let got = collect(chunks(&[&bytes[..3], &bytes[3..], b"\n"]), 1024).await;
        assert_eq!(got.len(), 1);
        let Line::Complete(b) = &got[0] else {
            panic!("{got:?}")
        };
        assert_eq!(std::str::from_utf8(b).unwrap(), line);
    }

    #[tokio::test]
    async fn five_mib_line_passes_whole() {
        let big = vec![b'z'; 5 * 1024 * 1024];
        let mut input = b"{\"small\":1}\n".to_vec();
        input.extend_from_slice(&big);
        input.extend_from_slice(b"\nafter\n");
        // An in-memory reader hands out as much as fits, so also feed it in pipe-sized chunks.
        let got = collect(&input[..], DEFAULT_MAX_LINE_BYTES).await;
        let parts: Vec<&[u8]> = input.chunks(65536).collect();
        let got_chunked = collect(chunks(&parts), DEFAULT_MAX_LINE_BYTES).await;
        for got in [got, got_chunked] {
            assert_eq!(got.len(), 3);
            assert_eq!(got[0], complete(b"{\"small\":1}"));
            assert_eq!(got[1], Line::Complete(Bytes::from(big.clone())));
            assert_eq!(got[2], complete(b"after"));
        }
    }

    #[tokio::test]
    async fn over_cap_line_is_reported_then_reading_goes_on() {
        let cap = 1000;
        let mut input = b"first\n".to_vec();
        input.extend(std::iter::repeat_n(b'q', 5000));
        input.extend_from_slice(b"\nsecond\nthird\n");
        let parts: Vec<&[u8]> = input.chunks(7).collect();
        let got = collect(chunks(&parts), cap).await;
        assert_eq!(
            got,
            vec![
                complete(b"first"),
                Line::Oversized { len: 5000 },
                complete(b"second"),
                complete(b"third"),
            ]
        );
        // The same when the whole over-long line arrives in one read.
        let got = collect(&input[..], cap).await;
        assert_eq!(got[1], Line::Oversized { len: 5000 });
        assert_eq!(got.len(), 4);
    }

    #[tokio::test]
    async fn over_cap_line_is_not_buffered() {
        let cap = 100_000;
        let total = 3 * 1024 * 1024;
        let mut input = vec![b'q'; total];
        input.extend_from_slice(b"\nok\n");
        let parts: Vec<&[u8]> = input.chunks(READ_CHUNK).collect();
        let mut lines = LineReader::new(chunks(&parts), cap);
        let first = lines.next_line().await.unwrap();
        assert_eq!(first, Some(Line::Oversized { len: total }));
        assert!(
            lines.buf.capacity() <= 2 * (cap + READ_CHUNK),
            "{}",
            lines.buf.capacity()
        );
        assert_eq!(lines.next_line().await.unwrap(), Some(complete(b"ok")));
        assert_eq!(lines.next_line().await.unwrap(), None);
    }

    #[tokio::test]
    async fn line_at_exactly_the_cap_passes() {
        let got = collect(&b"12345\n123456\n1234\n"[..], 5).await;
        assert_eq!(
            got,
            vec![
                complete(b"12345"),
                Line::Oversized { len: 6 },
                complete(b"1234")
            ]
        );
    }

    #[tokio::test]
    async fn eof_without_newline_emits_the_last_line() {
        assert_eq!(
            collect(&b"a\nb"[..], 10).await,
            vec![complete(b"a"), complete(b"b")]
        );
        assert_eq!(collect(&b"tail\r"[..], 10).await, vec![complete(b"tail")]);
        assert_eq!(
            collect(chunks(&[b"0123456789", b"abc"]), 10).await,
            vec![Line::Oversized { len: 13 }]
        );
    }

    #[tokio::test]
    async fn empty_lines_are_skipped() {
        let got = collect(&b"\n\r\n\na\n\n\r\nb\n\n"[..], 10).await;
        assert_eq!(got, vec![complete(b"a"), complete(b"b")]);
        assert!(collect(&b""[..], 10).await.is_empty());
        assert!(collect(&b"\n\n"[..], 10).await.is_empty());
    }

    #[tokio::test]
    async fn only_one_trailing_cr_is_stripped() {
        let got = collect(&b"a\r\r\nb\rc\n"[..], 10).await;
        assert_eq!(got, vec![complete(b"a\r"), complete(b"b\rc")]);
    }

    #[tokio::test]
    async fn small_lines_after_a_big_one_do_not_pin_its_buffer() {
        let mut input = vec![b'z'; 2 * 1024 * 1024];
        input.extend_from_slice(b"\nsmall\n");
        let mut lines = LineReader::new(&input[..], DEFAULT_MAX_LINE_BYTES);
        let Some(Line::Complete(big)) = lines.next_line().await.unwrap() else {
            panic!()
        };
        assert_eq!(big.len(), 2 * 1024 * 1024);
        assert!(lines.buf.capacity() <= SHRINK_ABOVE);
        assert_eq!(lines.next_line().await.unwrap(), Some(complete(b"small")));
    }

    #[tokio::test]
    async fn small_lines_read_one_at_a_time_share_an_allocation() {
        let line = vec![b's'; 300];
        let parts: Vec<Vec<u8>> = (0..100).map(|_| [&line[..], b"\n"].concat()).collect();
        let parts: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        let mut lines = LineReader::new(chunks(&parts), DEFAULT_MAX_LINE_BYTES);
        let mut got = Vec::new();
        while let Some(Line::Complete(b)) = lines.next_line().await.unwrap() {
            got.push(b);
        }
        assert_eq!(got.len(), 100);
        // Lines that sit back to back in memory come from the same allocation.
        let adjacent = got
            .windows(2)
            .filter(|w| w[0].as_ptr().wrapping_add(301) == w[1].as_ptr())
            .count();
        assert!(
            adjacent >= 90,
            "only {adjacent} of 99 pairs share an allocation"
        );
    }

    #[tokio::test]
    async fn reads_from_a_real_pipe() {
        let (mut tx, rx) = tokio::io::duplex(1024);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let line = "ünïcödé ".repeat(2000);
            for _ in 0..3 {
                tx.write_all(line.as_bytes()).await.unwrap();
                tx.write_all(b"\n").await.unwrap();
            }
            line
        });
        let got = collect(rx, DEFAULT_MAX_LINE_BYTES).await;
        let line = writer.await.unwrap();
        assert_eq!(got, vec![complete(line.as_bytes()); 3]);
    }
}
