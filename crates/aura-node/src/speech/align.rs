//! Phoneme timings for audio espeak-ng synthesised, and the visemes they make: pure
//! functions of espeak-ng's IPA transcription (`--ipa --sep=_`) and the audio's samples.
//!
//! espeak-ng's command line prints the phonemes it speaks but not when it speaks them (the
//! timings exist only as events of its C library, which Aura must not link: it is GPL).
//! So the timings are **estimated and then aligned to the audio**:
//!
//! 1. Each phoneme gets a predicted duration from its class (stop, fricative, nasal,
//!    vowel...), its stress and the speaking rate: a small model calibrated against
//!    espeak-ng's own phoneme events (`DURATION_MS`, `RATE_EXPONENT`).
//! 2. espeak-ng's audio is digital silence (samples exactly 0) in its pauses and in the
//!    closures before stops, and often just before a word's first consonant. Those silent
//!    runs are anchors: a dynamic programme matches each run, in order, to the phoneme
//!    boundary it most probably ends at, weighing how well the time between anchors fits
//!    the predicted durations, how likely a silence is at that kind of boundary, and how
//!    long the run is against what that boundary would give.
//! 3. Between anchors, time is shared out in proportion to the predicted durations.
//!
//! Measured against espeak-ng's own phoneme events on sentences the model was not fitted
//! on (12 voices, 100 to 300 words per minute), phoneme starts land 9 ms from the true
//! ones in the median and 19 ms on average (docs/openai.md has the table). The timeline
//! always spans exactly the speech in the audio: its last cue is where the audio's final
//! silence begins.

use std::fmt;

/// The 15 Oculus visemes, the vocabulary of the web UI's avatar (docs/ui.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Viseme {
    Sil,
    PP,
    FF,
    TH,
    DD,
    Kk,
    CH,
    SS,
    Nn,
    RR,
    Aa,
    E,
    I,
    O,
    U,
}

impl Viseme {
    pub fn as_str(self) -> &'static str {
        match self {
            Viseme::Sil => "sil",
            Viseme::PP => "PP",
            Viseme::FF => "FF",
            Viseme::TH => "TH",
            Viseme::DD => "DD",
            Viseme::Kk => "kk",
            Viseme::CH => "CH",
            Viseme::SS => "SS",
            Viseme::Nn => "nn",
            Viseme::RR => "RR",
            Viseme::Aa => "aa",
            Viseme::E => "E",
            Viseme::I => "I",
            Viseme::O => "O",
            Viseme::U => "U",
        }
    }
}

impl fmt::Display for Viseme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A point on the timeline: from `t_ms` on, the mouth shows `viseme` at `weight` (0-1),
/// until the next cue.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cue {
    pub t_ms: u32,
    pub viseme: Viseme,
    pub weight: f32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stress {
    Unstressed,
    Primary,
    Secondary,
}

/// One phoneme as espeak-ng printed it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Phone {
    /// The IPA symbol without its stress mark (`aɪ`, `tʃ`, `iː`).
    pub(crate) symbol: String,
    pub(crate) stress: Stress,
    /// Whether it begins a word (silences before word-initial consonants are common).
    pub(crate) word_initial: bool,
}

/// A pause between clauses (a new line of the transcription) or inside one (an empty
/// phoneme, `f_ˈɔː__ a_n_d`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pause {
    Clause,
    Short,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Unit {
    Phone(Phone),
    Pause(Pause),
}

impl Unit {
    fn is_pause(&self) -> bool {
        matches!(self, Unit::Pause(_))
    }
}

/// Reads espeak-ng's `--ipa --sep=_` output: one line per clause, words separated by
/// spaces, phonemes by `_`. Anything it does not recognise is still a phoneme (of the
/// vowel class when it holds a vowel letter, else a consonant), so no input is refused.
pub(crate) fn parse_ipa(text: &str) -> Vec<Unit> {
    let mut units: Vec<Unit> = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if units.last().is_some_and(|u| !u.is_pause()) {
            units.push(Unit::Pause(Pause::Clause));
        }
        for word in line.split_whitespace() {
            let mut first = true;
            for (i, token) in word.split('_').enumerate() {
                if token.is_empty() {
                    // An empty phoneme is a pause inside the clause; a leading separator
                    // is not.
                    if i > 0 && units.last().is_some_and(|u| !u.is_pause()) {
                        units.push(Unit::Pause(Pause::Short));
                    }
                    continue;
                }
                let (stress, symbol) = if let Some(s) = token.strip_prefix('ˈ') {
                    (Stress::Primary, s)
                } else if let Some(s) = token.strip_prefix('ˌ') {
                    (Stress::Secondary, s)
                } else {
                    (Stress::Unstressed, token)
                };
                if symbol.is_empty() {
                    continue;
                }
                units.push(Unit::Phone(Phone {
                    symbol: symbol.to_owned(),
                    stress,
                    word_initial: first,
                }));
                first = false;
            }
        }
    }
    while units.last().is_some_and(Unit::is_pause) {
        units.pop();
    }
    units
}

/// Vowel letters of the IPA (and the r-coloured vowels and barred i espeak-ng's American
/// English uses).
const VOWELS: &str = "aeiouyæɑɒɐəɘɛɜɞɪɨʉʊʌɔøœɶɤɯʏᵻɚɝ";

fn is_vowel(c: char) -> bool {
    VOWELS.contains(c)
}

/// The sound classes the duration model and the silence priors distinguish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Stop,
    Affricate,
    Fricative,
    Nasal,
    Approximant,
    Vowel,
}

/// The symbol without length marks, tie bars and combining diacritics.
fn base(symbol: &str) -> String {
    symbol
        .chars()
        .filter(|&c| {
            !matches!(
                c,
                'ː' | 'ˑ' | '\u{0361}' | '\u{035C}' | '\u{0300}'..='\u{036F}'
            )
        })
        .collect()
}

fn class(symbol: &str) -> Class {
    let b = base(symbol);
    match b.as_str() {
        "p" | "t" | "k" | "b" | "d" | "ɡ" | "g" | "c" | "ɟ" | "q" | "ʔ" | "ʈ" | "ɖ" => {
            Class::Stop
        }
        "tʃ" | "dʒ" | "ts" | "dz" | "tɕ" | "dʑ" | "tʂ" | "dʐ" => Class::Affricate,
        "s" | "z" | "ʃ" | "ʒ" | "ɕ" | "ʑ" | "ʂ" | "ʐ" | "f" | "v" | "θ" | "ð" | "x" | "ç" | "ʁ"
        | "ɣ" | "χ" | "ɸ" | "β" | "h" | "ɦ" => Class::Fricative,
        "m" | "n" | "ɲ" | "ɳ" | "ɱ" | "ŋ" | "ɴ" => Class::Nasal,
        "l" | "ɹ" | "r" | "ɾ" | "ɫ" | "ɭ" | "ɽ" | "ʎ" | "ʀ" | "w" | "j" | "ɥ" | "ʍ" | "ɻ" => {
            Class::Approximant
        }
        _ if b.chars().any(is_vowel) => Class::Vowel,
        _ => Class::Approximant,
    }
}

/// How a class's durations grow as speech slows: duration ∝ (175 / wpm)^exponent.
/// Consonants stretch much less than vowels, pauses much more (fitted to espeak-ng's events
/// at 80 to 350 words per minute).
mod rate_exponent {
    pub(super) const STOP: f64 = 0.45;
    pub(super) const AFFRICATE: f64 = 0.65;
    pub(super) const FRICATIVE: f64 = 0.68;
    pub(super) const APPROXIMANT: f64 = 0.61;
    pub(super) const NASAL: f64 = 0.77;
    pub(super) const VOWEL: f64 = 1.07;
    pub(super) const STRESSED_VOWEL: f64 = 1.3;
    pub(super) const CLAUSE_PAUSE: f64 = 1.9;
    pub(super) const SHORT_PAUSE: f64 = 1.5;
    /// Silent runs (closures, pauses' edges) shrink with the rate too.
    pub(super) const RUN: f64 = 0.8;
}

/// espeak-ng's default rate, at which the model's durations are given.
const BASE_WPM: f64 = 175.0;

fn stretch(wpm: f64, exponent: f64) -> f64 {
    (BASE_WPM / wpm.max(1.0)).powf(exponent)
}

/// The predicted duration of a unit, in milliseconds, at `wpm` words per minute.
fn predicted_ms(unit: &Unit, wpm: f64) -> f64 {
    use rate_exponent as e;
    let phone = match unit {
        Unit::Pause(Pause::Clause) => return 170.0 * stretch(wpm, e::CLAUSE_PAUSE),
        Unit::Pause(Pause::Short) => return 60.0 * stretch(wpm, e::SHORT_PAUSE),
        Unit::Phone(p) => p,
    };
    let b = base(&phone.symbol);
    match class(&phone.symbol) {
        Class::Stop => 48.0 * stretch(wpm, e::STOP),
        Class::Affricate => 70.0 * stretch(wpm, e::AFFRICATE),
        Class::Fricative => {
            let ms = match b.as_str() {
                "s" | "z" | "ʃ" | "ʒ" | "ɕ" | "ʑ" | "ʂ" | "ʐ" => 85.0,
                "ð" => 50.0,
                "h" | "ɦ" => 57.0,
                _ => 78.0,
            };
            ms * stretch(wpm, e::FRICATIVE)
        }
        Class::Nasal => (if b == "ŋ" { 100.0 } else { 87.0 }) * stretch(wpm, e::NASAL),
        Class::Approximant => {
            let ms = if matches!(b.as_str(), "w" | "j" | "ɥ" | "ʍ") {
                93.0
            } else {
                52.0
            };
            ms * stretch(wpm, e::APPROXIMANT)
        }
        Class::Vowel => {
            // Long vowels, diphthongs and syllabic consonants (`əl`) are longer.
            let long = phone.symbol.contains('ː') || b.chars().count() > 1;
            match phone.stress {
                Stress::Primary => {
                    (if long { 150.0 } else { 95.0 }) * stretch(wpm, e::STRESSED_VOWEL)
                }
                Stress::Secondary => {
                    (if long { 125.0 } else { 75.0 }) * stretch(wpm, e::STRESSED_VOWEL)
                }
                Stress::Unstressed => {
                    let ms = if long {
                        95.0
                    } else if b == "ə" {
                        70.0
                    } else {
                        65.0
                    };
                    ms * stretch(wpm, e::VOWEL)
                }
            }
        }
    }
}

/// How often espeak-ng leaves a silent run just before a phoneme of this class, inside a
/// word and at a word's start (counted on its output for a corpus of sentences).
fn silence_prior(class: Class, word_initial: bool) -> f64 {
    match (class, word_initial) {
        (Class::Stop, false) => 0.57,
        (Class::Stop, true) => 0.64,
        (Class::Affricate, false) => 0.33,
        (Class::Affricate, true) => 0.8,
        (Class::Fricative, false) => 0.04,
        (Class::Fricative, true) => 0.72,
        (Class::Nasal, false) => 0.04,
        (Class::Nasal, true) => 0.25,
        (Class::Approximant, false) => 0.08,
        (Class::Approximant, true) => 0.36,
        (Class::Vowel, false) => 0.12,
        (Class::Vowel, true) => 0.10,
    }
}

/// Runs of digital silence in `samples`, at least `min_ms` long, as (start, end) in
/// milliseconds.
pub(crate) fn silent_runs(samples: &[i16], rate: u32, min_ms: f64) -> Vec<(f64, f64)> {
    let ms = |i: usize| i as f64 * 1000.0 / f64::from(rate);
    let min_len = (min_ms * f64::from(rate) / 1000.0).ceil() as usize;
    let mut runs = Vec::new();
    let mut start = None;
    for (i, &s) in samples.iter().enumerate() {
        match (s == 0, start) {
            (true, None) => start = Some(i),
            (false, Some(b)) => {
                if i - b >= min_len.max(1) {
                    runs.push((ms(b), ms(i)));
                }
                start = None;
            }
            _ => {}
        }
    }
    if let Some(b) = start
        && samples.len() - b >= min_len.max(1)
    {
        runs.push((ms(b), ms(samples.len())));
    }
    runs
}

/// The aligner's weights: how much a misfit of the time between anchors costs (per
/// squared log ratio), a run's length against what its boundary would give, and a silent
/// run left unmatched.
const TIMING_WEIGHT: f64 = 6.0;
const LENGTH_WEIGHT: f64 = 1.5;
const RUN_SKIP_COST: f64 = 8.0;
/// States kept per run: the best few, so long texts cost time linear in their length.
const BEAM: usize = 64;
/// The time between two anchors may be this much shorter or longer than predicted.
const MAX_STRETCH: f64 = 2.5;

/// Where each unit starts, in milliseconds from the beginning of the audio, and where the
/// speech ends (the start of the audio's final silence, or its end).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Timing {
    pub(crate) starts: Vec<f64>,
    pub(crate) speech_end: f64,
}

#[derive(Clone, Copy, Debug)]
struct State {
    /// The boundary matched (the unit that starts where the run ends); 0 for the start.
    unit: usize,
    cost: f64,
    /// Where the interval after this anchor begins: in the audio, and in predicted time.
    out_ms: f64,
    out_pred: f64,
    /// The silent run matched (`None` for the start).
    run: Option<usize>,
    /// (layer, index) of the state before.
    back: Option<(usize, usize)>,
}

/// Aligns `units` (espeak-ng's transcription) to `samples` (its audio at `rate` Hz, spoken
/// at `wpm` words per minute).
pub(crate) fn align(units: &[Unit], samples: &[i16], rate: u32, wpm: f64) -> Timing {
    let total = samples.len() as f64 * 1000.0 / f64::from(rate.max(1));
    let mut runs = silent_runs(samples, rate, 4.0);
    let mut t0 = 0.0;
    let mut tend = total;
    if runs.first().is_some_and(|r| r.0 == 0.0) {
        t0 = runs.remove(0).1;
    }
    if runs.last().is_some_and(|r| (r.1 - total).abs() < 1e-6) {
        tend = runs.pop().map_or(total, |r| r.0);
    }
    if tend <= t0 {
        // All silence: nothing to place.
        return Timing {
            starts: vec![t0; units.len()],
            speech_end: t0,
        };
    }
    let n = units.len();
    if n == 0 {
        return Timing {
            starts: Vec::new(),
            speech_end: tend,
        };
    }
    let pred: Vec<f64> = units.iter().map(|u| predicted_ms(u, wpm)).collect();
    let mut cum = Vec::with_capacity(n + 1);
    cum.push(0.0);
    for p in &pred {
        cum.push(cum[cum.len() - 1] + p);
    }
    // Each boundary u (the start of unit u) that a silent run may end at: its prior and the
    // run length it would give.
    let mut prior = vec![0.0; n];
    let mut run_len = vec![0.0; n];
    for u in 1..n {
        let Unit::Phone(p) = &units[u] else { continue };
        let short_run = 11.0 * stretch(wpm, rate_exponent::RUN);
        (prior[u], run_len[u]) = match &units[u - 1] {
            Unit::Pause(Pause::Clause) => (0.97, 160.0 * stretch(wpm, rate_exponent::CLAUSE_PAUSE)),
            Unit::Pause(Pause::Short) => (0.6, pred[u - 1]),
            Unit::Phone(_) => {
                let c = class(&p.symbol);
                let len = if matches!(c, Class::Stop | Class::Affricate) {
                    39.0 * stretch(wpm, rate_exponent::RUN)
                } else {
                    short_run
                };
                (silence_prior(c, p.word_initial), len)
            }
        };
    }
    let mut skip_cum = Vec::with_capacity(n + 1);
    skip_cum.push(0.0);
    for &p in &prior {
        let c = if p > 0.0 {
            -(1.0 - f64::min(p, 0.97)).ln()
        } else {
            0.0
        };
        skip_cum.push(skip_cum[skip_cum.len() - 1] + c);
    }
    // The cost of leaving boundaries a+1..b-1 without a silence.
    let skipped = |a: usize, b: usize| skip_cum[b] - skip_cum[(a + 1).min(b)];
    let scale = (tend - t0) / cum[n];

    let mut layers: Vec<Vec<State>> = vec![vec![State {
        unit: 0,
        cost: 0.0,
        out_ms: t0,
        out_pred: 0.0,
        run: None,
        back: None,
    }]];
    for (j, &(s, e)) in runs.iter().enumerate() {
        let len = e - s;
        // Candidate boundaries: those a predecessor could reach with a plausible stretch.
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for layer in layers.iter().rev().take(3) {
            for st in layer {
                let span = (e - st.out_ms).max(0.0) / scale;
                lo = lo.min(st.out_pred + span / MAX_STRETCH - 1.0);
                hi = hi.max(st.out_pred + span * MAX_STRETCH + 1.0);
            }
        }
        let first = cum.partition_point(|&c| c < lo).max(1);
        let mut current: Vec<State> = Vec::new();
        for u in first..n {
            if cum[u - 1] > hi {
                break;
            }
            if prior[u] <= 0.0 {
                continue;
            }
            // A run before a pause's next phoneme is the pause itself: its start is where
            // the pause starts.
            let after_pause = units[u - 1].is_pause();
            let (in_ms, in_pred) = if after_pause {
                (s, cum[u - 1])
            } else {
                (e, cum[u])
            };
            let length_cost = LENGTH_WEIGHT * (len / run_len[u]).ln().powi(2);
            let mut best: Option<(f64, usize, usize)> = None;
            let layer_count = layers.len();
            for back in 1..=3usize {
                let Some(li) = layer_count.checked_sub(back) else {
                    break;
                };
                for (si, st) in layers[li].iter().enumerate() {
                    if st.unit >= u {
                        continue;
                    }
                    let d_ms = in_ms - st.out_ms;
                    let d_pred = (in_pred - st.out_pred) * scale;
                    if d_ms <= 0.0 || d_pred <= 0.0 {
                        continue;
                    }
                    let cost = st.cost
                        + TIMING_WEIGHT * (d_ms / d_pred).ln().powi(2)
                        + skipped(st.unit, u)
                        - prior[u].ln()
                        + length_cost
                        + (back - 1) as f64 * RUN_SKIP_COST;
                    if best.is_none_or(|b| cost < b.0) {
                        best = Some((cost, li, si));
                    }
                }
            }
            if let Some((cost, li, si)) = best {
                current.push(State {
                    unit: u,
                    cost,
                    out_ms: e,
                    out_pred: cum[u],
                    run: Some(j),
                    back: Some((li, si)),
                });
            }
        }
        if current.is_empty() {
            // No boundary fits this run: carry the previous states past it, at a cost.
            let last = layers.len() - 1;
            current = layers[last]
                .iter()
                .enumerate()
                .map(|(si, st)| State {
                    cost: st.cost + RUN_SKIP_COST,
                    back: Some((last, si)),
                    run: None,
                    ..*st
                })
                .collect();
        }
        current.sort_by(|a, b| a.cost.total_cmp(&b.cost));
        current.truncate(BEAM);
        layers.push(current);
    }
    // The end: the speech's end matches the end of the last unit.
    let mut best: Option<(f64, usize, usize)> = None;
    for back in 1..=3usize {
        let Some(li) = layers.len().checked_sub(back) else {
            break;
        };
        for (si, st) in layers[li].iter().enumerate() {
            let d_ms = tend - st.out_ms;
            let d_pred = (cum[n] - st.out_pred) * scale;
            if d_ms <= 0.0 || d_pred <= 0.0 {
                continue;
            }
            let cost = st.cost
                + TIMING_WEIGHT * (d_ms / d_pred).ln().powi(2)
                + skipped(st.unit, n)
                + (back - 1) as f64 * RUN_SKIP_COST;
            if best.is_none_or(|b| cost < b.0) {
                best = Some((cost, li, si));
            }
        }
    }
    // The anchors, from the end back: (unit, time its start is fixed at).
    let mut anchors: Vec<(usize, f64)> = vec![(n, tend)];
    let mut at = best.map(|(_, li, si)| (li, si));
    while let Some((li, si)) = at {
        let st = layers[li][si];
        if let Some(j) = st.run {
            let (s, e) = runs[j];
            anchors.push((st.unit, e));
            if units[st.unit - 1].is_pause() {
                anchors.push((st.unit - 1, s));
            }
        }
        at = st.back;
    }
    anchors.push((0, t0));
    anchors.reverse();
    anchors.dedup_by_key(|a| a.0);

    // A pause with no silence of its own took no time (espeak-ng breaks long clauses
    // without pausing).
    let mut anchored = vec![false; n + 1];
    for a in &anchors {
        anchored[a.0] = true;
    }
    let mut weight = pred;
    for (u, w) in weight.iter_mut().enumerate() {
        if units[u].is_pause() && !anchored[u] {
            *w = 0.0;
        }
    }
    let mut starts = vec![t0; n];
    let mut last_time = t0;
    for pair in anchors.windows(2) {
        let ((u0, a), (u1, b)) = (pair[0], pair[1]);
        let a = a.max(last_time);
        let b = b.max(a);
        let total_w: f64 = weight[u0..u1].iter().sum();
        let mut t = a;
        for u in u0..u1 {
            starts[u] = t;
            t += if total_w > 0.0 {
                (b - a) * weight[u] / total_w
            } else {
                0.0
            };
        }
        last_time = b;
    }
    Timing {
        starts,
        speech_end: tend,
    }
}

/// The viseme a phoneme shows, and for a diphthong (or a vowel with a syllabic consonant)
/// the one it moves to.
pub(crate) fn visemes_of(symbol: &str) -> (Viseme, Option<Viseme>) {
    let b = base(symbol);
    let consonant = |s: &str| -> Option<Viseme> {
        Some(match s {
            "p" | "b" | "m" => Viseme::PP,
            "f" | "v" | "ɱ" | "ɸ" | "β" => Viseme::FF,
            "θ" | "ð" => Viseme::TH,
            "t" | "d" | "ɾ" | "ʈ" | "ɖ" => Viseme::DD,
            "k" | "ɡ" | "g" | "c" | "ɟ" | "q" | "x" | "ɣ" | "χ" | "ŋ" | "ɴ" | "ç" => {
                Viseme::Kk
            }
            "tʃ" | "dʒ" | "ʃ" | "ʒ" | "tɕ" | "dʑ" | "ɕ" | "ʑ" | "tʂ" | "dʐ" | "ʂ" | "ʐ" => {
                Viseme::CH
            }
            "s" | "z" | "ts" | "dz" => Viseme::SS,
            "n" | "l" | "ɲ" | "ɳ" | "ɫ" | "ɭ" | "ʎ" => Viseme::Nn,
            "ɹ" | "r" | "ʀ" | "ʁ" | "ɻ" | "ɽ" => Viseme::RR,
            "w" | "ʍ" | "ɥ" => Viseme::U,
            "j" => Viseme::I,
            // The mouth is already shaping the next vowel; a little open.
            "h" | "ɦ" => Viseme::Aa,
            "ʔ" => Viseme::Sil,
            _ => return None,
        })
    };
    if let Some(v) = consonant(&b) {
        return (v, None);
    }
    let vowel = |c: char| -> Option<Viseme> {
        Some(match c {
            'a' | 'ɑ' | 'æ' | 'ɐ' | 'ʌ' | 'ɶ' => Viseme::Aa,
            'e' | 'ɛ' | 'ə' | 'ɜ' | 'ɘ' | 'ɞ' | 'œ' | 'ø' | 'ɤ' => Viseme::E,
            'i' | 'ɪ' | 'ɨ' | 'ᵻ' | 'y' | 'ʏ' => Viseme::I,
            'o' | 'ɔ' | 'ɒ' => Viseme::O,
            'u' | 'ʊ' | 'ʉ' | 'ɯ' => Viseme::U,
            'ɚ' | 'ɝ' => Viseme::RR,
            _ => return None,
        })
    };
    let mut chars = b.chars();
    let Some(first) = chars.by_ref().find_map(vowel) else {
        // A symbol this table does not know: the first letter's consonant shape, if any.
        let first = b.chars().next().map(String::from).unwrap_or_default();
        return (consonant(&first).unwrap_or(Viseme::E), None);
    };
    let rest: String = chars.collect();
    let second = rest
        .chars()
        .find_map(vowel)
        .or_else(|| consonant(&rest))
        .filter(|&v| v != first);
    (first, second)
}

fn weight_of(phone: &Phone, v: Viseme) -> f32 {
    let vowel = matches!(
        v,
        Viseme::Aa | Viseme::E | Viseme::I | Viseme::O | Viseme::U
    );
    if matches!(phone.symbol.as_str(), "h" | "ɦ") {
        return 0.3;
    }
    if !vowel || class(&phone.symbol) != Class::Vowel {
        return 1.0;
    }
    let reduced = matches!(base(&phone.symbol).as_str(), "ə" | "ɐ" | "ᵻ" | "ɨ");
    match phone.stress {
        Stress::Primary => 1.0,
        Stress::Secondary => 0.85,
        Stress::Unstressed if reduced => 0.5,
        Stress::Unstressed => 0.7,
    }
}

/// The viseme timeline of aligned units: a `sil` cue at 0, a cue where each phoneme starts
/// (two for a diphthong, the second 60 % of the way through), `sil` in pauses and at the
/// end of speech; consecutive cues of the same viseme merged, times in whole
/// milliseconds, sorted.
pub(crate) fn timeline(units: &[Unit], timing: &Timing) -> Vec<Cue> {
    let mut cues: Vec<Cue> = Vec::with_capacity(units.len() + 2);
    let mut push = |t: f64, viseme: Viseme, weight: f32| {
        let t_ms = t.max(0.0).round() as u32;
        if let Some(last) = cues.last_mut() {
            if last.viseme == viseme {
                return;
            }
            if last.t_ms >= t_ms {
                // Two cues at the same millisecond: the later one is what shows.
                *last = Cue {
                    t_ms: last.t_ms,
                    viseme,
                    weight,
                };
                return;
            }
        }
        cues.push(Cue {
            t_ms,
            viseme,
            weight,
        });
    };
    push(0.0, Viseme::Sil, 1.0);
    for (u, unit) in units.iter().enumerate() {
        let start = timing.starts.get(u).copied().unwrap_or(timing.speech_end);
        let end = timing
            .starts
            .get(u + 1)
            .copied()
            .unwrap_or(timing.speech_end);
        match unit {
            Unit::Pause(_) => push(start, Viseme::Sil, 1.0),
            Unit::Phone(p) => {
                let (first, second) = visemes_of(&p.symbol);
                push(start, first, weight_of(p, first));
                if let Some(second) = second {
                    push(start + 0.6 * (end - start), second, weight_of(p, second));
                }
            }
        }
    }
    push(timing.speech_end, Viseme::Sil, 1.0);
    // Merging may leave a cue equal to the one before it (A B A with B dropped): merge
    // those too.
    cues.dedup_by(|b, a| a.viseme == b.viseme);
    cues
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phones(units: &[Unit]) -> Vec<&str> {
        units
            .iter()
            .map(|u| match u {
                Unit::Phone(p) => p.symbol.as_str(),
                Unit::Pause(Pause::Clause) => "|",
                Unit::Pause(Pause::Short) => ",",
            })
            .collect()
    }

    #[test]
    fn transcriptions_are_read_into_phonemes_and_pauses() {
        let units = parse_ipa("h_ə_l_ˈəʊ\nw_ˈɜː_l_d\n\nf_ˈɔː__ a_n_d\n");
        assert_eq!(
            phones(&units),
            [
                "h", "ə", "l", "əʊ", "|", "w", "ɜː", "l", "d", "|", "f", "ɔː", ",", "a", "n", "d"
            ]
        );
        let Unit::Phone(p) = &units[3] else { panic!() };
        assert_eq!(p.stress, Stress::Primary);
        assert!(!p.word_initial);
        let Unit::Phone(a) = &units[13] else { panic!() };
        assert!(a.word_initial);
        // Nothing, or only separators, is no units; trailing pauses are dropped.
        assert!(parse_ipa("").is_empty());
        assert!(parse_ipa("\n_ __\n").is_empty());
        assert_eq!(phones(&parse_ipa("a_\n")), ["a"]);
    }

    #[test]
    fn phonemes_map_to_the_oculus_visemes() {
        let check = |s: &str, want: (Viseme, Option<Viseme>)| {
            assert_eq!(visemes_of(s), want, "{s}");
        };
        use Viseme::*;
        check("p", (PP, None));
        check("m", (PP, None));
        check("f", (FF, None));
        check("ð", (TH, None));
        check("t", (DD, None));
        check("ɡ", (Kk, None));
        check("tʃ", (CH, None));
        check("ʒ", (CH, None));
        check("z", (SS, None));
        check("n", (Nn, None));
        check("l", (Nn, None));
        check("ɹ", (RR, None));
        check("ɑː", (Aa, None));
        check("ɛ", (E, None));
        check("iː", (I, None));
        check("ɔː", (O, None));
        check("uː", (U, None));
        check("aɪ", (Aa, Some(I)));
        check("aʊ", (Aa, Some(U)));
        check("əʊ", (E, Some(U)));
        check("oʊ", (O, Some(U)));
        check("ɔɪ", (O, Some(I)));
        check("əl", (E, Some(Nn)));
        check("ɚ", (RR, None));
        check("ɔ̃", (O, None));
        // Unknown symbols still get a shape.
        check("ǃ", (E, None));
    }

    #[test]
    fn silent_runs_are_found_with_their_times() {
        let mut s = vec![5i16; 100];
        s[10..40].fill(0);
        s[50..52].fill(0);
        s.extend([0; 20]);
        // At 1000 Hz a sample is a millisecond; runs under 4 ms are ignored.
        assert_eq!(
            silent_runs(&s, 1000, 4.0),
            vec![(10.0, 40.0), (100.0, 120.0)]
        );
    }

    /// Synthetic audio whose phonemes last exactly their predicted durations times
    /// `factor`, silent where a closure or pause is: the aligner must find every start.
    fn synthetic(units: &[Unit], wpm: f64, factor: f64, rate: u32) -> (Vec<i16>, Vec<f64>) {
        let per_ms = f64::from(rate) / 1000.0;
        let mut samples = vec![0i16; (10.0 * per_ms) as usize];
        let mut truth = Vec::new();
        for (u, unit) in units.iter().enumerate() {
            let start = samples.len() as f64 / per_ms;
            truth.push(start);
            let len = (predicted_ms(unit, wpm) * factor * per_ms) as usize;
            let silent = match unit {
                Unit::Pause(_) => len,
                // A stop's closure ends its predecessor.
                _ if matches!(units.get(u + 1), Some(Unit::Phone(p)) if class(&p.symbol) == Class::Stop) => {
                    (30.0 * per_ms) as usize
                }
                _ => 0,
            };
            samples.extend(std::iter::repeat_n(900i16, len.saturating_sub(silent)));
            samples.extend(std::iter::repeat_n(0i16, silent.min(len)));
        }
        samples.extend(std::iter::repeat_n(0i16, (50.0 * per_ms) as usize));
        (samples, truth)
    }

    #[test]
    fn phoneme_starts_are_recovered_from_synthetic_audio() {
        let units =
            parse_ipa("ð_ə k_w_ˈɪ_k b_ɹ_ˈaʊ_n f_ˈɒ_k_s\ndʒ_ˈʌ_m_p_s ˌəʊ_v_ə ð_ə l_ˈeɪ_z_i d_ˈɒ_ɡ");
        for (wpm, factor) in [(175.0, 1.0), (175.0, 1.3), (90.0, 0.8), (350.0, 1.1)] {
            let (samples, truth) = synthetic(&units, wpm, factor, 22050);
            let timing = align(&units, &samples, 22050, wpm);
            for (u, (got, want)) in timing.starts.iter().zip(&truth).enumerate() {
                assert!(
                    (got - want).abs() < 2.0,
                    "{wpm} wpm ×{factor}: unit {u} ({:?}) at {got:.1} ms, truly {want:.1}",
                    units[u]
                );
            }
            let end = *truth.last().unwrap() + predicted_ms(units.last().unwrap(), wpm) * factor;
            assert!((timing.speech_end - end).abs() < 1.0);
        }
    }

    #[test]
    fn audio_without_silences_is_shared_out_in_proportion() {
        let units = parse_ipa("m_ˈa_m_ə");
        let samples = vec![700i16; 22050];
        let timing = align(&units, &samples, 22050, 175.0);
        assert_eq!(timing.starts[0], 0.0);
        assert_eq!(timing.speech_end, 1000.0);
        assert!(timing.starts.windows(2).all(|w| w[0] < w[1]));
        // Odd inputs never panic.
        assert_eq!(align(&[], &samples, 22050, 175.0).starts, Vec::<f64>::new());
        let silent = align(&units, &[0; 100], 22050, 175.0);
        assert_eq!(silent.starts.len(), 4);
        let empty = align(&units, &[], 22050, 175.0);
        assert_eq!(empty.speech_end, 0.0);
    }

    #[test]
    fn a_timeline_starts_silent_follows_the_phonemes_and_ends_silent() {
        let units = parse_ipa("h_ə_l_ˈəʊ\nw_ˈɜː_l_d");
        let timing = Timing {
            starts: vec![10.0, 70.0, 120.0, 220.0, 415.0, 565.0, 690.0, 915.0, 940.0],
            speech_end: 980.0,
        };
        let cues = timeline(&units, &timing);
        let got: Vec<(u32, &str)> = cues.iter().map(|c| (c.t_ms, c.viseme.as_str())).collect();
        assert_eq!(
            got,
            [
                (0, "sil"),
                (10, "aa"),
                (70, "E"),
                (120, "nn"),
                (220, "E"),
                (337, "U"),
                (415, "sil"),
                (565, "U"),
                (690, "E"),
                (915, "nn"),
                (940, "DD"),
                (980, "sil")
            ]
        );
        assert!(cues.iter().all(|c| (0.0..=1.0).contains(&c.weight)));
        assert_eq!(cues[3].weight, 1.0);
        assert_eq!(cues[2].weight, 0.5);
    }
}
