//! WAV headers in and out, and the resampler that turns espeak-ng's 22,050 Hz into the
//! 24 kHz OpenAI's raw `pcm` format promises. Pure, bounded and panic-free on any input.

/// 16-bit mono PCM, the only shape espeak-ng writes and the only one accepted from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Format {
    pub(crate) sample_rate: u32,
}

/// The sample rate of OpenAI's `pcm` response format.
pub(crate) const PCM_RATE: u32 = 24_000;

/// The size written in a streamed WAV header's length fields, which cannot be known when
/// it is sent: OpenAI's streamed WAV uses the same value, and readers take it as "until
/// the end of the stream".
pub(crate) const STREAMED: u32 = u32::MAX;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeaderError {
    #[error("the audio is not a RIFF WAVE file")]
    NotWave,
    #[error("the audio is not 16-bit mono PCM")]
    Unsupported,
}

/// Reads a WAV header from the start of `bytes`: the format and where the samples begin.
/// `Ok(None)` when more bytes are needed; a header must fit in the first 4 KiB.
pub(crate) fn parse_header(bytes: &[u8]) -> Result<Option<(Format, usize)>, HeaderError> {
    const LIMIT: usize = 4096;
    if bytes.len() < 12 {
        return if b"RIFF".starts_with(&bytes[..bytes.len().min(4)]) {
            Ok(None)
        } else {
            Err(HeaderError::NotWave)
        };
    }
    if &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err(HeaderError::NotWave);
    }
    let mut at = 12;
    let mut format = None;
    loop {
        if at > LIMIT {
            return Err(HeaderError::NotWave);
        }
        let Some(head) = bytes.get(at..at + 8) else {
            return Ok(None);
        };
        let id = &head[0..4];
        let size = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
        let body = at + 8;
        match id {
            b"fmt " => {
                if size < 16 {
                    return Err(HeaderError::NotWave);
                }
                let Some(f) = bytes.get(body..body + 16) else {
                    return Ok(None);
                };
                let tag = u16::from_le_bytes([f[0], f[1]]);
                let channels = u16::from_le_bytes([f[2], f[3]]);
                let rate = u32::from_le_bytes([f[4], f[5], f[6], f[7]]);
                let bits = u16::from_le_bytes([f[14], f[15]]);
                if tag != 1 || channels != 1 || bits != 16 || rate == 0 {
                    return Err(HeaderError::Unsupported);
                }
                format = Some(Format { sample_rate: rate });
            }
            b"data" => {
                return format.map(|f| Some((f, body))).ok_or(HeaderError::NotWave);
            }
            _ => {}
        }
        // Chunks are padded to even sizes.
        at = body.saturating_add(size).saturating_add(size & 1);
    }
}

/// A canonical 44-byte header for 16-bit mono PCM: with the data's length, or for a
/// stream whose length is not known yet, [`STREAMED`].
pub(crate) fn header(format: Format, data_bytes: Option<u32>) -> [u8; 44] {
    let (riff, data) = match data_bytes {
        Some(n) => (n.saturating_add(36), n),
        None => (STREAMED, STREAMED),
    };
    let mut h = [0u8; 44];
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&riff.to_le_bytes());
    h[8..12].copy_from_slice(b"WAVE");
    h[12..16].copy_from_slice(b"fmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&1u16.to_le_bytes());
    h[22..24].copy_from_slice(&1u16.to_le_bytes());
    h[24..28].copy_from_slice(&format.sample_rate.to_le_bytes());
    h[28..32].copy_from_slice(&(format.sample_rate * 2).to_le_bytes());
    h[32..34].copy_from_slice(&2u16.to_le_bytes());
    h[34..36].copy_from_slice(&16u16.to_le_bytes());
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&data.to_le_bytes());
    h
}

/// Little-endian 16-bit samples from bytes (an odd last byte is ignored).
pub(crate) fn samples(bytes: &[u8]) -> Vec<i16> {
    bytes
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

/// Taps on each side of a resampled point.
const HALF_TAPS: i64 = 8;

/// A streaming band-limited resampler by a rational factor (`up`/`down`): each output
/// sample is the input under a Blackman-windowed sinc centred at its position, one filter
/// per phase, precomputed. Fed in pieces, it gives exactly what it gives fed at once.
#[derive(Debug)]
pub(crate) struct Resampler {
    up: u64,
    down: u64,
    /// `filters[phase][k]` weighs input `floor(pos) - HALF_TAPS + 1 + k`.
    filters: Vec<Vec<f32>>,
    /// Input not yet wholly used, starting at input index `base`.
    pending: Vec<f32>,
    base: u64,
    /// Input samples received so far.
    received: u64,
    /// The next output sample's index.
    next: u64,
}

impl Resampler {
    pub(crate) fn new(from: u32, to: u32) -> Resampler {
        let g = gcd(u64::from(from), u64::from(to)).max(1);
        let (up, down) = (u64::from(to) / g, u64::from(from) / g);
        // Up-sampling keeps the input's band; down-sampling must cut at the output's.
        let cutoff = 0.92 * f64::min(1.0, up as f64 / down as f64);
        let filters = (0..up)
            .map(|phase| {
                let frac = phase as f64 / up as f64;
                let taps: Vec<f64> = (0..2 * HALF_TAPS)
                    .map(|k| {
                        let t = (k - HALF_TAPS + 1) as f64 - frac;
                        let x = std::f64::consts::PI * cutoff * t;
                        let sinc = if x.abs() < 1e-9 { 1.0 } else { x.sin() / x };
                        let w = (t / HALF_TAPS as f64 + 1.0) / 2.0;
                        let window = if (0.0..=1.0).contains(&w) {
                            0.42 - 0.5 * (2.0 * std::f64::consts::PI * w).cos()
                                + 0.08 * (4.0 * std::f64::consts::PI * w).cos()
                        } else {
                            0.0
                        };
                        sinc * window
                    })
                    .collect();
                let sum: f64 = taps.iter().sum();
                taps.iter().map(|t| (t / sum) as f32).collect()
            })
            .collect();
        Resampler {
            up,
            down,
            filters,
            pending: Vec::new(),
            base: 0,
            received: 0,
            next: 0,
        }
    }

    /// Resamples `input`, appending little-endian 16-bit samples to `out`.
    pub(crate) fn push(&mut self, input: &[i16], out: &mut Vec<u8>) {
        self.pending.extend(input.iter().map(|&s| f32::from(s)));
        self.received += input.len() as u64;
        self.run(false, out);
    }

    /// Ends the stream: the output is `ceil(input × to / from)` samples long.
    pub(crate) fn finish(&mut self, out: &mut Vec<u8>) {
        self.run(true, out);
    }

    fn run(&mut self, last: bool, out: &mut Vec<u8>) {
        let total_out = (self.received * self.up).div_ceil(self.down);
        loop {
            if last && self.next >= total_out {
                break;
            }
            let pos = self.next * self.down;
            let (center, phase) = (pos / self.up, (pos % self.up) as usize);
            let first = center as i64 - HALF_TAPS + 1;
            let end = center as i64 + HALF_TAPS;
            if !last && end >= self.received as i64 {
                break;
            }
            let mut acc = 0.0f32;
            for (k, w) in self.filters[phase].iter().enumerate() {
                let i = first + k as i64;
                if i < 0 || i >= self.received as i64 {
                    continue;
                }
                let j = (i as u64).saturating_sub(self.base) as usize;
                acc += self.pending.get(j).copied().unwrap_or(0.0) * w;
            }
            let s = acc.round().clamp(f32::from(i16::MIN), f32::from(i16::MAX)) as i16;
            out.extend_from_slice(&s.to_le_bytes());
            self.next += 1;
        }
        // Drop what no later output needs.
        let keep_from = ((self.next * self.down) / self.up).saturating_sub(HALF_TAPS as u64);
        if keep_from > self.base {
            let drop = ((keep_from - self.base) as usize).min(self.pending.len());
            self.pending.drain(..drop);
            self.base += drop as u64;
        }
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_bad_ones_are_refused() {
        let f = Format { sample_rate: 22050 };
        let h = header(f, Some(1000));
        assert_eq!(parse_header(&h), Ok(Some((f, 44))));
        assert_eq!(&h[4..8], &1036u32.to_le_bytes());
        let s = header(f, None);
        assert_eq!(&s[4..8], &[0xff; 4]);
        assert_eq!(&s[40..44], &[0xff; 4]);
        // Partial headers ask for more; wrong ones are refused.
        assert_eq!(parse_header(&h[..3]), Ok(None));
        assert_eq!(parse_header(&h[..30]), Ok(None));
        assert_eq!(
            parse_header(b"OggS\0\0\0\0\0\0\0\0"),
            Err(HeaderError::NotWave)
        );
        let mut stereo = h;
        stereo[22] = 2;
        assert_eq!(parse_header(&stereo), Err(HeaderError::Unsupported));
        // An extra chunk before the data is skipped.
        let mut list = h[..36].to_vec();
        list.extend_from_slice(b"LIST\x03\0\0\0abc\0");
        list.extend_from_slice(&h[36..]);
        assert_eq!(parse_header(&list), Ok(Some((f, 56))));
        // A data chunk with no format first is not a WAV we can read.
        let mut no_fmt = h[..12].to_vec();
        no_fmt.extend_from_slice(&h[36..]);
        assert_eq!(parse_header(&no_fmt), Err(HeaderError::NotWave));
    }

    fn sine(n: usize, rate: f64, hz: f64) -> Vec<i16> {
        (0..n)
            .map(|i| (10000.0 * (2.0 * std::f64::consts::PI * hz * i as f64 / rate).sin()) as i16)
            .collect()
    }

    #[test]
    fn resampling_keeps_the_pitch_and_the_length_and_does_not_depend_on_chunking() {
        let input = sine(22050, 22050.0, 440.0);
        let mut whole = Vec::new();
        let mut r = Resampler::new(22050, PCM_RATE);
        r.push(&input, &mut whole);
        r.finish(&mut whole);
        assert_eq!(whole.len() / 2, 24000);
        let mut pieces = Vec::new();
        let mut r = Resampler::new(22050, PCM_RATE);
        for chunk in input.chunks(777) {
            r.push(chunk, &mut pieces);
        }
        r.finish(&mut pieces);
        assert_eq!(whole, pieces);
        // The same tone: compare with a 440 Hz sine at 24 kHz, away from the edges.
        let out = samples(&whole);
        let want = sine(24000, 24000.0, 440.0);
        let err = out[100..23900]
            .iter()
            .zip(&want[100..23900])
            .map(|(a, b)| (f64::from(*a) - f64::from(*b)).abs())
            .fold(0.0, f64::max);
        assert!(err < 150.0, "max error {err}");
    }
}
