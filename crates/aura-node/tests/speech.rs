//! `POST /v1/audio/speech` through a real socket on a node running the real espeak-ng
//! (`scripts/setup-speech.sh` installs it; these tests fail, saying so, where it is
//! missing): the streamed WAV and PCM, the viseme timeline against the audio it came with,
//! OpenAI-style refusals, who may call, and espeak-ng stopped when its caller leaves or its
//! time runs out.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use std::time::Duration;

use aura_node::Limits;
use aura_node::speech::{Options, Speech};
use base64::Engine as _;
use serde_json::{Value, json};
use support::{Node, assert_error_shape, start_speaking};

async fn espeak(options: Options) -> Speech {
    Speech::start(options).await.unwrap_or_else(|e| {
        panic!(
            "espeak-ng is needed here: {e}; run scripts/setup-speech.sh (apt-get install espeak-ng)"
        )
    })
}

async fn node() -> Node {
    let speech = espeak(Options::default()).await;
    start_speaking(Limits::default(), true, &[], &[], Some(speech)).await
}

/// Posts a speech request with `key`; the status, the content type and the body's bytes.
async fn say(n: &Node, key: Option<&str>, body: &Value) -> (u16, String, Vec<u8>) {
    let mut r = n.http.post(format!("{}/v1/audio/speech", n.url)).json(body);
    if let Some(k) = key {
        r = r.bearer_auth(&n.keys[k]);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, ctype, resp.bytes().await.unwrap().to_vec())
}

/// A WAV's sample rate, its samples, and the data length its header states.
fn read_wav(bytes: &[u8]) -> (u32, Vec<i16>, u32) {
    assert_eq!(&bytes[0..4], b"RIFF");
    assert_eq!(&bytes[8..16], b"WAVEfmt ");
    let u16_at = |i: usize| u16::from_le_bytes([bytes[i], bytes[i + 1]]);
    let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap());
    assert_eq!(
        (u16_at(20), u16_at(22), u16_at(34)),
        (1, 1, 16),
        "PCM, mono, 16-bit"
    );
    assert_eq!(&bytes[36..40], b"data");
    let samples = bytes[44..]
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    (u32_at(24), samples, u32_at(40))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speech_streams_a_wav_and_the_same_audio_as_24_khz_pcm() {
    let n = node().await;
    let text = "Hello from Aura. The quick brown fox jumps over the lazy dog.";
    let (status, ctype, wav) = say(
        &n,
        Some("operator"),
        &json!({"model": "tts-1", "input": text, "voice": "alloy", "response_format": "wav"}),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&wav));
    assert_eq!(ctype, "audio/wav");
    let (rate, samples, stated) = read_wav(&wav);
    assert_eq!(rate, 22050);
    // Streamed: the header cannot know the length, and says so as OpenAI's does.
    assert_eq!(stated, u32::MAX);
    let seconds = samples.len() as f64 / f64::from(rate);
    assert!((2.0..8.0).contains(&seconds), "{seconds} s of audio");
    assert!(samples.iter().filter(|s| s.unsigned_abs() > 1000).count() > samples.len() / 10);

    // No response_format is WAV too (this node encodes no MP3); an agent key may speak.
    let (status, ctype, again) = say(
        &n,
        Some("agent_a"),
        &json!({"input": text, "voice": "alloy"}),
    )
    .await;
    assert_eq!((status, ctype.as_str()), (200, "audio/wav"));
    assert_eq!(again, wav, "the same request gives the same audio");

    let (status, ctype, pcm) = say(
        &n,
        Some("operator"),
        &json!({"input": text, "voice": "alloy", "response_format": "pcm"}),
    )
    .await;
    assert_eq!((status, ctype.as_str()), (200, "audio/pcm"));
    assert_eq!(pcm.len() % 2, 0);
    assert_eq!(pcm.len() / 2, (samples.len() * 24000).div_ceil(22050));

    // Twice the speed, about half the time.
    let (_, _, fast) = say(
        &n,
        Some("operator"),
        &json!({"input": text, "voice": "alloy", "speed": 2.0}),
    )
    .await;
    let ratio = read_wav(&fast).1.len() as f64 / samples.len() as f64;
    assert!(
        (0.4..0.65).contains(&ratio),
        "speed 2 gave {ratio} of the time"
    );
}

/// Stretches of digital silence at least `min_ms` long, in milliseconds.
fn silences(samples: &[i16], rate: u32, min_ms: f64) -> Vec<(f64, f64)> {
    let ms = |i: usize| i as f64 * 1000.0 / f64::from(rate);
    let mut out = Vec::new();
    let mut start = None;
    for (i, &s) in samples.iter().chain([1i16].iter()).enumerate() {
        match (s == 0, start) {
            (true, None) => start = Some(i),
            (false, Some(b)) => {
                if ms(i) - ms(b) >= min_ms {
                    out.push((ms(b), ms(i)));
                }
                start = None;
            }
            _ => {}
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_viseme_timeline_spans_the_audio_and_its_pauses_fall_in_the_silences() {
    let n = node().await;
    let text = "Peter Piper picked a peck of pickled peppers. Well, where is it? Over there, by the shore.";
    for (voice, speed) in [("aura", 1.0), ("nova", 1.0), ("fable", 1.5), ("onyx", 0.7)] {
        let body = json!({"input": text, "voice": voice, "response_format": "wav", "speed": speed, "aura_visemes": true});
        let (status, ctype, bytes) = say(&n, Some("operator"), &body).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
        assert_eq!(ctype, "application/json");
        let answer: Value = serde_json::from_slice(&bytes).unwrap();
        let wav = base64::engine::general_purpose::STANDARD
            .decode(answer["audio_b64"].as_str().unwrap())
            .unwrap();
        let (rate, samples, stated) = read_wav(&wav);
        // The whole WAV, with its exact length.
        assert_eq!(stated as usize, samples.len() * 2);
        let audio_ms = samples.len() as f64 * 1000.0 / f64::from(rate);
        let duration = answer["duration_ms"].as_f64().unwrap();
        assert!(
            (duration - audio_ms).abs() <= 1.0,
            "{duration} vs {audio_ms}"
        );

        let cues = answer["visemes"].as_array().unwrap();
        let times: Vec<f64> = cues.iter().map(|c| c["t_ms"].as_f64().unwrap()).collect();
        let names: Vec<&str> = cues.iter().map(|c| c["viseme"].as_str().unwrap()).collect();
        assert!(times.windows(2).all(|w| w[0] < w[1]), "sorted: {times:?}");
        assert_eq!((times[0], names[0]), (0.0, "sil"));
        for c in cues {
            let w = c["weight"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&w), "{c}");
        }
        let known = [
            "sil", "PP", "FF", "TH", "DD", "kk", "CH", "SS", "nn", "RR", "aa", "E", "I", "O", "U",
        ];
        assert!(names.iter().all(|v| known.contains(v)), "{names:?}");
        // The timeline's length is the audio's (the bound: within 5 %): its last
        // cue, the silence after the last phoneme, is where the audio's speech ends.
        let end = *times.last().unwrap();
        assert_eq!(*names.last().unwrap(), "sil");
        assert!(
            (end - audio_ms).abs() <= 0.05 * audio_ms,
            "{voice}: timeline {end} ms, audio {audio_ms} ms"
        );
        // "Peter Piper picked a peck of pickled peppers": the lips close, often.
        assert!(
            names.iter().filter(|v| **v == "PP").count() >= 6,
            "{names:?}"
        );
        assert!(names.iter().collect::<std::collections::HashSet<_>>().len() >= 10);
        // Every pause the audio holds (commas, full stops) has the mouth at rest inside
        // it, and nothing is spoken in the middle of one.
        // (Pauses shrink faster than speech as the rate rises; closures before stops are
        // shorter still.)
        let pauses = silences(&samples, rate, 100.0 / speed);
        assert!(pauses.len() >= 3, "{voice}: pauses {pauses:?}");
        for &(a, b) in &pauses {
            let at_rest = cues
                .iter()
                .zip(&times)
                .any(|(c, &t)| c["viseme"] == "sil" && t >= a - 15.0 && t <= b - 15.0);
            assert!(
                at_rest,
                "{voice}: no sil in the pause {a:.0}-{b:.0}: {cues:?}"
            );
            for (c, &t) in cues.iter().zip(&times) {
                if c["viseme"] != "sil" {
                    assert!(
                        t <= a + 15.0 || t >= b - 15.0,
                        "{voice}: {c} inside the pause {a:.0}-{b:.0}"
                    );
                }
            }
        }
    }

    // PCM with the timeline: the same audio, resampled, in the JSON.
    let (status, _, bytes) = say(
        &n,
        Some("agent_a"),
        &json!({"input": "Short and sweet.", "voice": "echo", "response_format": "pcm", "aura_visemes": true}),
    )
    .await;
    assert_eq!(status, 200);
    let answer: Value = serde_json::from_slice(&bytes).unwrap();
    let pcm = base64::engine::general_purpose::STANDARD
        .decode(answer["audio_b64"].as_str().unwrap())
        .unwrap();
    let ms = answer["duration_ms"].as_f64().unwrap();
    assert!(
        (pcm.len() as f64 / 2.0 / 24.0 - ms).abs() < 2.0,
        "{} bytes for {ms} ms",
        pcm.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_speech_requests_get_openai_errors_and_only_those_who_may_run_models_speak() {
    let n = node().await;
    let cases = [
        (
            json!({"input": "hi", "voice": "nobody"}),
            400,
            "voice: `nobody` is not a voice",
        ),
        (json!({"input": "hi"}), 400, "voice: is required"),
        (
            json!({"input": "", "voice": "alloy"}),
            400,
            "input: is empty",
        ),
        (
            json!({"input": "   ", "voice": "alloy"}),
            400,
            "input: is empty",
        ),
        (json!({"voice": "alloy"}), 400, "input: is required"),
        (
            json!({"input": "x".repeat(4097), "voice": "alloy"}),
            400,
            "input: is 4097 characters long",
        ),
        (
            json!({"input": "hi", "voice": "alloy", "response_format": "mp3"}),
            400,
            "response_format: `mp3` is not supported",
        ),
        (
            json!({"input": "hi", "voice": "alloy", "response_format": "opus"}),
            400,
            "response_format: `opus` is not supported",
        ),
        (
            json!({"input": "hi", "voice": "alloy", "speed": 5}),
            400,
            "speed: must be a number from 0.25 to 4",
        ),
        (
            json!({"input": "hi", "voice": "alloy", "model": "whisper-1"}),
            404,
            "model: `whisper-1` is not a speech model",
        ),
        (
            json!({"input": "hi", "voice": "alloy", "volume": 11}),
            400,
            "volume: is not a parameter",
        ),
    ];
    for (body, status, message) in cases {
        let r = n
            .call(
                "POST",
                "/v1/audio/speech",
                Some("operator"),
                Some(body.clone()),
            )
            .await;
        assert_eq!(r.status, status, "{body}: {:?}", r.body);
        assert_error_shape(&r);
        let got = r.body["error"]["message"].as_str().unwrap();
        assert!(got.starts_with(message), "{body}: {got}");
    }
    // 4,096 characters is allowed (OpenAI's limit), and they are all spoken.
    let long = "Aura speaks. ".repeat(400)[..4096].to_owned();
    let (status, _, wav) = say(
        &n,
        Some("operator"),
        &json!({"input": long, "voice": "alloy", "speed": 4.0}),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        read_wav(&wav).1.len() > 22050 * 30,
        "400 sentences at 700 wpm last over 30 s"
    );

    // Approvers may not run models; no key, no speech; a page of another origin may not
    // make the node speak.
    let body = json!({"input": "hi", "voice": "alloy"});
    assert_eq!(
        n.call(
            "POST",
            "/v1/audio/speech",
            Some("approver_a"),
            Some(body.clone())
        )
        .await
        .status,
        403
    );
    assert_eq!(
        n.call("POST", "/v1/audio/speech", None, Some(body.clone()))
            .await
            .status,
        401
    );
    let cross = n
        .http
        .post(format!("{}/v1/audio/speech", n.url))
        .bearer_auth(&n.keys["operator"])
        .header("origin", "http://evil.example")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status().as_u16(), 403);
}

/// The espeak-ng processes this test process is running.
fn espeak_children() -> usize {
    let me = std::process::id();
    let mut count = 0;
    for task in std::fs::read_dir(format!("/proc/{me}/task"))
        .unwrap()
        .flatten()
    {
        let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for pid in children.split_whitespace() {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == "espeak-ng" {
                count += 1;
            }
        }
    }
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_who_leaves_stops_espeak_ng() {
    let n = node().await;
    let long = "A long story that goes on and on. ".repeat(120);
    let mut resp = n
        .http
        .post(format!("{}/v1/audio/speech", n.url))
        .bearer_auth(&n.keys["operator"])
        .json(&json!({"input": long, "voice": "alloy", "speed": 0.25}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    // The first audio arrives while espeak-ng is still speaking.
    let first = resp.chunk().await.unwrap().unwrap();
    assert_eq!(&first[..4], b"RIFF");
    assert_eq!(espeak_children(), 1);
    drop(resp);
    let start = std::time::Instant::now();
    while espeak_children() > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "espeak-ng still runs"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_synthesis_past_its_deadline_is_killed_and_answered_504() {
    // A stand-in that answers `--version` as espeak-ng does and then never speaks.
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("espeak-ng");
    std::fs::write(
        &fake,
        "#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'eSpeak NG text-to-speech: 0.0  Data at: /x'; exit 0; fi\nexec sleep 30\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let speech = espeak(Options {
        program: fake,
        timeout: Duration::from_secs(1),
        max_concurrent: 1,
    })
    .await;
    assert_eq!(speech.version(), "0.0");
    let n = start_speaking(Limits::default(), true, &[], &[], Some(speech)).await;
    for visemes in [false, true] {
        let started = std::time::Instant::now();
        let r = n
            .call(
                "POST",
                "/v1/audio/speech",
                Some("operator"),
                Some(json!({"input": "hi", "voice": "alloy", "aura_visemes": visemes})),
            )
            .await;
        assert_eq!(r.status, 504, "{:?}", r.body);
        assert_eq!(r.body["error"]["code"], "speech_timeout");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    // Not espeak-ng at all: the node will not use it.
    let other = dir.path().join("other");
    std::fs::write(&other, "#!/bin/sh\necho hello\n").unwrap();
    std::fs::set_permissions(&other, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let refused = Speech::start(Options {
        program: other,
        ..Options::default()
    })
    .await;
    assert!(
        refused
            .unwrap_err()
            .to_string()
            .contains("is not espeak-ng")
    );
    let missing = Speech::start(Options {
        program: "no-such-espeak".into(),
        ..Options::default()
    })
    .await;
    assert!(missing.unwrap_err().to_string().contains("was not found"));
}
