//! Speech: text to audio with espeak-ng, run as a separate process (it is GPL, so Aura
//! never links it), and the viseme timeline of what it said (`align`).
//!
//! Each request runs one `espeak-ng` child: no shell, an empty environment, the text on
//! its standard input (the only thing in it that came from the caller; the voice is
//! chosen from [`VOICES`] and the rate is a number), a deadline after which it is killed,
//! bounded output, and killed too when the request's future is dropped (the caller went
//! away). At most [`Options::max_concurrent`] run at once; more wait a little, then get
//! [`Error::Busy`].
//!
//! Two ways out: [`Speech::stream`] passes the audio on as espeak-ng writes it (the first
//! bytes leave after the first clause is synthesised), and [`Speech::synthesize`] collects
//! the whole utterance with espeak-ng's phoneme transcription, for the timeline.

pub mod align;
pub mod wav;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

pub use align::{Cue, Viseme};

/// OpenAI's limit on `input`, in characters.
pub const MAX_INPUT_CHARS: usize = 4096;
/// The range of OpenAI's `speed`.
pub const SPEED_RANGE: std::ops::RangeInclusive<f64> = 0.25..=4.0;
/// espeak-ng's default rate, OpenAI's speed 1.0.
const BASE_WPM: f64 = 175.0;
/// espeak-ng speaks no slower than this (it raises lower rates to it).
const MIN_WPM: u32 = 80;
/// The most audio one request may produce: more than 4,096 characters need at the slowest
/// rate, so only a misbehaving program reaches it.
const MAX_AUDIO_BYTES: usize = 96 << 20;
/// The most transcription one request may produce.
const MAX_PHONEME_BYTES: usize = 1 << 20;
/// How long a request waits for a free synthesis slot before it is told to come back.
const QUEUE_WAIT: Duration = Duration::from_secs(10);

/// The voices: OpenAI's names (and Aura's own, `aura`, the avatar's) mapped to espeak-ng
/// voices and variants. The table is the only source of the `-v` argument. Variants with
/// an echo are left out: the echo fills the silences the timeline is aligned to.
pub const VOICES: &[(&str, &str)] = &[
    ("alloy", "en-us"),
    ("ash", "en-us+m3"),
    ("ballad", "en-gb-x-rp+m6"),
    ("coral", "en-us+belinda"),
    ("echo", "en-us+m1"),
    ("fable", "en-gb-x-rp"),
    ("onyx", "en-us+m4"),
    ("nova", "en-us+steph"),
    ("sage", "en-us+Annie"),
    ("shimmer", "en-gb+linda"),
    ("verse", "en-us+m6"),
    ("aura", "en-us+m7"),
];

/// A voice from [`VOICES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Voice {
    pub name: &'static str,
    espeak: &'static str,
}

impl Voice {
    /// The voice called `name`, if there is one.
    pub fn named(name: &str) -> Option<Voice> {
        VOICES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(name, espeak)| Voice { name, espeak })
    }

    /// The espeak-ng voice it runs.
    pub fn espeak(&self) -> &'static str {
        self.espeak
    }
}

/// The audio's encoding: WAV (16-bit mono at espeak-ng's 22,050 Hz), or OpenAI's raw `pcm`
/// (16-bit mono little-endian at 24 kHz, resampled).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioFormat {
    Wav,
    Pcm,
}

impl AudioFormat {
    pub fn content_type(self) -> &'static str {
        match self {
            AudioFormat::Wav => "audio/wav",
            AudioFormat::Pcm => "audio/pcm",
        }
    }
}

/// What to say, already checked (`routes/audio.rs` reads it from OpenAI's JSON).
#[derive(Debug, Clone)]
pub struct Request {
    pub input: String,
    pub voice: Voice,
    pub speed: f64,
    pub format: AudioFormat,
}

impl Request {
    /// The espeak-ng rate for `speed`: 175 words a minute at 1.0, never below espeak-ng's
    /// floor of 80 (so speeds under 0.46 all speak at 80).
    pub fn words_per_minute(&self) -> u32 {
        let speed = self.speed.clamp(*SPEED_RANGE.start(), *SPEED_RANGE.end());
        ((BASE_WPM * speed).round() as u32).max(MIN_WPM)
    }

    /// The text as espeak-ng is given it: control characters (which it might take as
    /// input framing) become spaces.
    fn text(&self) -> String {
        self.input
            .chars()
            .map(|c| if c.is_control() && c != '\n' { ' ' } else { c })
            .collect()
    }
}

/// How the node runs espeak-ng (`[speech]` in aura.toml).
#[derive(Debug, Clone)]
pub struct Options {
    /// The program: a path, or a name looked up on `PATH` once, at start.
    pub program: PathBuf,
    /// The most one synthesis may take before it is killed.
    pub timeout: Duration,
    /// How many may run at once.
    pub max_concurrent: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            program: PathBuf::from("espeak-ng"),
            timeout: Duration::from_secs(60),
            max_concurrent: 4,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("`{}` was not found", .0.display())]
    NotFound(PathBuf),
    #[error("`{}` is not espeak-ng: {reason}", program.display())]
    NotEspeak { program: PathBuf, reason: String },
    #[error("every speech slot is busy")]
    Busy,
    #[error("espeak-ng could not be run")]
    Spawn(#[source] std::io::Error),
    #[error("espeak-ng failed ({status}){detail}")]
    Failed { status: String, detail: String },
    #[error("espeak-ng took longer than {0} s")]
    TimedOut(u64),
    #[error("espeak-ng wrote more than this node accepts")]
    TooLong,
    #[error("espeak-ng's audio is unreadable")]
    BadAudio(#[from] wav::HeaderError),
}

/// The speech service; clones share the slots.
#[derive(Debug, Clone)]
pub struct Speech {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    program: PathBuf,
    version: String,
    timeout: Duration,
    slots: Arc<Semaphore>,
}

/// A whole utterance: the audio's samples and what espeak-ng said it spoke.
#[derive(Debug, Clone)]
pub struct Utterance {
    pub sample_rate: u32,
    pub samples: Vec<i16>,
    /// espeak-ng's transcription (`--ipa --sep=_`), one clause a line.
    pub phonemes: String,
    pub words_per_minute: u32,
}

impl Utterance {
    /// The audio's length in milliseconds.
    pub fn duration_ms(&self) -> u32 {
        (self.samples.len() as u64 * 1000 / u64::from(self.sample_rate.max(1))) as u32
    }

    /// The viseme timeline: phoneme timings estimated and aligned to the audio's silences
    /// (see [`align`]).
    pub fn visemes(&self) -> Vec<Cue> {
        let units = align::parse_ipa(&self.phonemes);
        let timing = align::align(
            &units,
            &self.samples,
            self.sample_rate,
            f64::from(self.words_per_minute),
        );
        align::timeline(&units, &timing)
    }

    /// The audio encoded as `format`: a WAV with exact lengths, or 24 kHz raw PCM.
    pub fn encode(&self, format: AudioFormat) -> Vec<u8> {
        match format {
            AudioFormat::Wav => {
                let data = (self.samples.len() * 2).min(u32::MAX as usize - 36) as u32;
                let mut out = Vec::with_capacity(44 + self.samples.len() * 2);
                out.extend_from_slice(&wav::header(
                    wav::Format {
                        sample_rate: self.sample_rate,
                    },
                    Some(data),
                ));
                out.extend(self.samples.iter().flat_map(|s| s.to_le_bytes()));
                out
            }
            AudioFormat::Pcm => {
                let mut out = Vec::new();
                let mut r = wav::Resampler::new(self.sample_rate, wav::PCM_RATE);
                r.push(&self.samples, &mut out);
                r.finish(&mut out);
                out
            }
        }
    }
}

/// Finds `program` on `PATH` unless it is a path already.
fn resolve(program: &Path) -> Option<PathBuf> {
    let is_file = |p: &Path| p.is_file();
    if program.components().count() > 1 || program.is_absolute() {
        return is_file(program).then(|| program.to_owned());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| is_file(p))
    })
}

impl Speech {
    /// Finds espeak-ng and checks that it is one (`--version`).
    pub async fn start(options: Options) -> Result<Speech, Error> {
        let program =
            resolve(&options.program).ok_or_else(|| Error::NotFound(options.program.clone()))?;
        let mut cmd = Command::new(&program);
        cmd.arg("--version")
            .env_clear()
            .current_dir("/")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(10), cmd.output())
            .await
            .map_err(|_| Error::NotEspeak {
                program: program.clone(),
                reason: "`--version` did not answer".into(),
            })?
            .map_err(Error::Spawn)?;
        let text = String::from_utf8_lossy(&out.stdout);
        let Some(rest) = text.trim().strip_prefix("eSpeak NG text-to-speech:") else {
            return Err(Error::NotEspeak {
                program,
                reason: "`--version` does not name eSpeak NG".into(),
            });
        };
        let version = rest.split_whitespace().next().unwrap_or("").to_owned();
        Ok(Speech {
            inner: Arc::new(Inner {
                program,
                version,
                timeout: options.timeout,
                slots: Arc::new(Semaphore::new(options.max_concurrent.max(1))),
            }),
        })
    }

    /// espeak-ng's version (`1.51`).
    pub fn version(&self) -> &str {
        &self.inner.version
    }

    pub fn program(&self) -> &Path {
        &self.inner.program
    }

    async fn slot(&self) -> Result<OwnedSemaphorePermit, Error> {
        let wait = QUEUE_WAIT.min(self.inner.timeout);
        match tokio::time::timeout(wait, self.inner.slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(Error::Busy),
        }
    }

    /// Starts espeak-ng on `req`, with `extra` arguments, its text written to stdin.
    async fn spawn(&self, req: &Request, extra: &[&str], stderr: Stdio) -> Result<Child, Error> {
        let mut cmd = Command::new(&self.inner.program);
        cmd.args(["-v", req.voice.espeak])
            .args(["-s", &req.words_per_minute().to_string()])
            // UTF-8 text, all of stdin at once, no pause after the last sentence (so the
            // audio ends where the speech does), the WAV on stdout.
            .args(["-b", "1", "--stdin", "-z", "--stdout"])
            .args(extra)
            .env_clear()
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(Error::Spawn)?;
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| Error::Spawn(std::io::Error::other("no stdin")))?;
        // espeak-ng reads all its input before it writes, and 4,096 characters fit a
        // pipe's buffer, so this cannot wait on the reader.
        let text = req.text();
        let written = tokio::time::timeout(self.inner.timeout, async {
            stdin.write_all(text.as_bytes()).await?;
            stdin.shutdown().await
        })
        .await;
        match written {
            Ok(Ok(())) => Ok(child),
            Ok(Err(e)) => Err(Error::Spawn(e)),
            Err(_) => Err(Error::TimedOut(self.inner.timeout.as_secs())),
        }
    }

    /// Synthesises all of `req` with its phoneme transcription.
    pub async fn synthesize(&self, req: &Request) -> Result<Utterance, Error> {
        let _slot = self.slot().await?;
        let deadline = Instant::now() + self.inner.timeout;
        let secs = self.inner.timeout.as_secs();
        // The transcription goes to stderr, beside the audio on stdout, from the same run.
        let mut child = self
            .spawn(
                req,
                &["--ipa", "--sep=_", "--phonout=/dev/stderr"],
                Stdio::piped(),
            )
            .await?;
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(Error::Spawn(std::io::Error::other("no output pipes")));
        };
        let run = async {
            let (audio, phonemes) = tokio::try_join!(
                read_bounded(stdout, MAX_AUDIO_BYTES),
                read_bounded(stderr, MAX_PHONEME_BYTES)
            )?;
            let status = child.wait().await.map_err(Error::Spawn)?;
            Ok::<_, Error>((audio, phonemes, status))
        };
        let (audio, phonemes, status) = tokio::time::timeout_at(deadline, run)
            .await
            .map_err(|_| Error::TimedOut(secs))??;
        let phonemes = String::from_utf8_lossy(&phonemes).into_owned();
        if !status.success() {
            return Err(Error::Failed {
                status: status.to_string(),
                detail: first_line(&phonemes),
            });
        }
        let (format, offset) = wav::parse_header(&audio)?.ok_or(wav::HeaderError::NotWave)?;
        Ok(Utterance {
            sample_rate: format.sample_rate,
            samples: wav::samples(&audio[offset..]),
            phonemes,
            words_per_minute: req.words_per_minute(),
        })
    }

    /// Starts synthesising `req` and returns its audio as it comes, once the first of it
    /// has (so that a failure to start is still an error, not a truncated body).
    pub async fn stream(&self, req: &Request) -> Result<AudioStream, Error> {
        let slot = self.slot().await?;
        let mut child = self.spawn(req, &[], Stdio::null()).await?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| Error::Spawn(std::io::Error::other("no stdout")))?;
        let mut stream = AudioStream {
            child,
            stdout,
            _slot: slot,
            deadline: Instant::now() + self.inner.timeout,
            secs: self.inner.timeout.as_secs(),
            format: req.format,
            head: Vec::new(),
            sample_rate: None,
            odd: None,
            resampler: None,
            sent: 0,
            done: false,
            first: None,
        };
        stream.first = stream.next_chunk().await.transpose()?;
        Ok(stream)
    }
}

fn first_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(|l| format!(": {}", l.chars().take(200).collect::<String>()))
        .unwrap_or_default()
}

/// Reads all of `from`, refusing more than `limit` bytes.
async fn read_bounded(mut from: impl AsyncRead + Unpin, limit: usize) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = from.read(&mut buf).await.map_err(Error::Spawn)?;
        if n == 0 {
            return Ok(out);
        }
        if out.len() + n > limit {
            return Err(Error::TooLong);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// Audio as espeak-ng writes it, re-framed: a WAV header whose lengths say "streamed"
/// ([`wav::STREAMED`], as OpenAI's streamed WAV) then the samples, or raw 24 kHz PCM.
/// Dropping it kills espeak-ng.
#[derive(Debug)]
pub struct AudioStream {
    child: Child,
    stdout: ChildStdout,
    _slot: OwnedSemaphorePermit,
    deadline: Instant,
    secs: u64,
    format: AudioFormat,
    /// espeak-ng's header, until it is whole.
    head: Vec<u8>,
    sample_rate: Option<u32>,
    /// A sample's first byte, when a read ended between its two.
    odd: Option<u8>,
    resampler: Option<wav::Resampler>,
    sent: usize,
    done: bool,
    first: Option<Vec<u8>>,
}

impl AudioStream {
    /// The next piece of audio; `None` at the end. An error ends the stream.
    pub async fn next_chunk(&mut self) -> Option<Result<Vec<u8>, Error>> {
        if let Some(first) = self.first.take() {
            return Some(Ok(first));
        }
        if self.done {
            return None;
        }
        let result = tokio::time::timeout_at(self.deadline, self.read_chunk())
            .await
            .unwrap_or(Err(Error::TimedOut(self.secs)));
        match result {
            Ok(Some(bytes)) => Some(Ok(bytes)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                let _ = self.child.start_kill();
                Some(Err(e))
            }
        }
    }

    async fn read_chunk(&mut self) -> Result<Option<Vec<u8>>, Error> {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = self.stdout.read(&mut buf).await.map_err(Error::Spawn)?;
            if n == 0 {
                let status = self.child.wait().await.map_err(Error::Spawn)?;
                if !status.success() {
                    return Err(Error::Failed {
                        status: status.to_string(),
                        detail: String::new(),
                    });
                }
                if self.sample_rate.is_none() {
                    return Err(wav::HeaderError::NotWave.into());
                }
                let mut out = Vec::new();
                if let Some(r) = self.resampler.as_mut() {
                    r.finish(&mut out);
                }
                self.done = true;
                return Ok((!out.is_empty()).then_some(out));
            }
            self.sent += n;
            if self.sent > MAX_AUDIO_BYTES {
                return Err(Error::TooLong);
            }
            let mut bytes = &buf[..n];
            let mut out = Vec::new();
            if self.sample_rate.is_none() {
                self.head.extend_from_slice(bytes);
                let Some((format, offset)) = wav::parse_header(&self.head)? else {
                    continue;
                };
                self.sample_rate = Some(format.sample_rate);
                match self.format {
                    AudioFormat::Wav => out.extend_from_slice(&wav::header(format, None)),
                    AudioFormat::Pcm => {
                        self.resampler =
                            Some(wav::Resampler::new(format.sample_rate, wav::PCM_RATE));
                    }
                }
                let head = std::mem::take(&mut self.head);
                let rest = head[offset..].to_vec();
                out.extend(self.samples_out(&rest));
                bytes = &[];
            }
            out.extend(self.samples_out(bytes));
            if !out.is_empty() {
                return Ok(Some(out));
            }
        }
    }

    /// Sample bytes as the response carries them.
    fn samples_out(&mut self, bytes: &[u8]) -> Vec<u8> {
        match self.format {
            AudioFormat::Wav => bytes.to_vec(),
            AudioFormat::Pcm => {
                let mut joined = Vec::with_capacity(bytes.len() + 1);
                joined.extend(self.odd.take());
                joined.extend_from_slice(bytes);
                if joined.len() % 2 == 1 {
                    self.odd = joined.pop();
                }
                let mut out = Vec::new();
                if let Some(r) = self.resampler.as_mut() {
                    r.push(&wav::samples(&joined), &mut out);
                }
                out
            }
        }
    }
}
