//! Is the model's picture of "red apple" recognisably the red apple? For each prompt naming
//! an emoji, the generated image is compared with all 3,786 training images and the named
//! one must be among the five nearest.
//!
//! The distance is the squared L2 distance between the two images composited over white
//! and averaged over 2×2 blocks (32×32 RGB): a cheap perceptual distance that ignores
//! single-pixel noise but keeps shape and colour. Ranks under the full-resolution pixel
//! L2 are reported beside it.
#![forbid(unsafe_code)]

use serde::Serialize;

use crate::dataset::{self, EmojiDataset};
use crate::tiny::{self, Image, SampleOptions, TextEncoder, TinyModel};

/// The 50 prompts of the recognisability test: common emoji across the categories, named
/// exactly as the dataset names them (chosen before the default model was trained).
pub const PROMPTS: [&str; 50] = [
    "red apple",
    "rocket",
    "smiling face with sunglasses",
    "grinning face",
    "face with tears of joy",
    "pile of poo",
    "ghost",
    "robot face",
    "dog face",
    "cat face",
    "pig face",
    "frog face",
    "panda face",
    "monkey face",
    "penguin",
    "octopus",
    "snail",
    "turtle",
    "sunflower",
    "cactus",
    "evergreen tree",
    "maple leaf",
    "banana",
    "grapes",
    "watermelon",
    "pineapple",
    "cherries",
    "strawberry",
    "carrot",
    "slice of pizza",
    "hamburger",
    "birthday cake",
    "hot beverage",
    "soccer ball",
    "trophy",
    "guitar",
    "violin",
    "mobile phone",
    "electric light bulb",
    "crystal ball",
    "key",
    "bomb",
    "automobile",
    "bicycle",
    "airplane",
    "sailboat",
    "house building",
    "rainbow",
    "snowman",
    "fire",
];

/// Hits needed on [`PROMPTS`]: the bar.
pub const REQUIRED_HITS: usize = 35;
/// A hit: the named image among the nearest this many.
pub const TOP: usize = 5;

/// One prompt's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct Recognition {
    /// The prompt.
    pub prompt: String,
    /// Rank of the named image under the block-averaged distance (1 = nearest).
    pub rank: usize,
    /// Its rank under full-resolution pixel L2.
    pub rank_pixel: usize,
    /// Captions of the five nearest images.
    pub nearest: Vec<String>,
}

/// The evaluation's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Prompts whose named image ranked within [`TOP`].
    pub hits: usize,
    /// The same under full-resolution pixel L2.
    pub hits_pixel: usize,
    /// Prompts evaluated.
    pub total: usize,
    /// Each prompt.
    pub results: Vec<Recognition>,
}

/// An image as compared: 32×32 block means and the full 64×64 pixels, RGB over white.
struct Features {
    small: Vec<f32>,
    full: Vec<f32>,
}

fn features(rgb: &[u8]) -> Features {
    let side = tiny::IMAGE;
    let half = side / 2;
    let mut small = vec![0.0f32; half * half * 3];
    for y in 0..half {
        for x in 0..half {
            for c in 0..3 {
                let at = |yy: usize, xx: usize| f32::from(rgb[(yy * side + xx) * 3 + c]);
                small[(y * half + x) * 3 + c] = (at(2 * y, 2 * x)
                    + at(2 * y, 2 * x + 1)
                    + at(2 * y + 1, 2 * x)
                    + at(2 * y + 1, 2 * x + 1))
                    / 4.0;
            }
        }
    }
    Features {
        small,
        full: rgb.iter().map(|&v| f32::from(v)).collect(),
    }
}

/// Squared distance, summed in 16 lanes (pixel values are small integers and their means,
/// so f32 lanes are exact enough), then the lanes in order.
fn sq(a: &[f32], b: &[f32]) -> f64 {
    let mut lanes = [0.0f32; 16];
    let (ca, ra) = a.as_chunks::<16>();
    let (cb, rb) = b.as_chunks::<16>();
    for (x, y) in ca.iter().zip(cb) {
        for i in 0..16 {
            let d = x[i] - y[i];
            lanes[i] += d * d;
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| (x - y) * (x - y)).sum();
    lanes.iter().map(|&v| f64::from(v)).sum::<f64>() + f64::from(tail)
}

/// Ranks every dataset image by distance to an image: (rank of each target under both
/// distances, the five nearest indices under the block-averaged one).
fn rank(refs: &[Features], image: &[u8], targets: &[usize]) -> (usize, usize, Vec<usize>) {
    let f = features(image);
    let ds: Vec<f64> = refs.iter().map(|r| sq(&r.small, &f.small)).collect();
    let dp: Vec<f64> = refs.iter().map(|r| sq(&r.full, &f.full)).collect();
    let rank_in = |d: &[f64]| {
        targets
            .iter()
            .map(|&t| 1 + d.iter().filter(|&&x| x < d[t]).count())
            .min()
            .unwrap_or(usize::MAX)
    };
    let mut order: Vec<usize> = (0..refs.len()).collect();
    order.sort_by(|&a, &b| ds[a].total_cmp(&ds[b]).then(a.cmp(&b)));
    order.truncate(TOP);
    (rank_in(&ds), rank_in(&dp), order)
}

/// Generates an image for each prompt (seed = `opts.seed` + its index) and ranks the image
/// it names among all of `dataset`'s. Also returns the images.
pub fn recognisability(
    model: &TinyModel,
    encoder: &dyn TextEncoder,
    dataset: &EmojiDataset,
    prompts: &[&str],
    opts: &SampleOptions,
) -> Result<(Report, Vec<Image>), tiny::Error> {
    let refs: Vec<Features> = dataset
        .emoji
        .iter()
        .map(|e| features(&dataset::rgba_on_white(&e.rgba)))
        .collect();
    let texts: Vec<String> = prompts.iter().map(|p| tiny::normalize_prompt(p)).collect();
    let mut targets = Vec::new();
    for t in &texts {
        let idx: Vec<usize> = dataset
            .emoji
            .iter()
            .enumerate()
            .filter(|(_, e)| &e.name == t)
            .map(|(i, _)| i)
            .collect();
        if idx.is_empty() {
            return Err(tiny::Error::Invalid(format!("no emoji is named {t:?}")));
        }
        targets.push(idx);
    }
    let embeddings = encoder.encode(&texts)?;
    let seeds: Vec<u64> = (0..texts.len() as u64)
        .map(|i| opts.seed.wrapping_add(i))
        .collect();
    let images = model.generate_from_embeddings(&embeddings, &seeds, opts)?;
    let mut results = Vec::new();
    for ((text, image), target) in texts.iter().zip(&images).zip(&targets) {
        let (rank, rank_pixel, nearest) = rank(&refs, &image.rgb, target);
        results.push(Recognition {
            prompt: text.clone(),
            rank,
            rank_pixel,
            nearest: nearest
                .iter()
                .map(|&i| dataset.emoji[i].name.clone())
                .collect(),
        });
    }
    let hits = results.iter().filter(|r| r.rank <= TOP).count();
    let hits_pixel = results.iter().filter(|r| r.rank_pixel <= TOP).count();
    Ok((
        Report {
            hits,
            hits_pixel,
            total: results.len(),
            results,
        },
        images,
    ))
}

/// Pairs of a prompt and a negative prompt naming a look-alike emoji, for
/// [`negative_steering`]: each negative is what the prompt's picture could drift towards
/// (another face, another fruit, another instrument), so guidance away from it has
/// something to push against.
pub const STEERING_PAIRS: [(&str, &str); 10] = [
    ("dog face", "cat face"),
    ("cherries", "strawberry"),
    ("grinning face", "face with tears of joy"),
    ("violin", "guitar"),
    ("bicycle", "automobile"),
    ("watermelon", "strawberry"),
    ("pig face", "monkey face"),
    ("snowman", "ghost"),
    ("fire", "maple leaf"),
    ("banana", "pineapple"),
];

/// What a negative prompt did to one prompt's picture.
#[derive(Clone, Debug, Serialize)]
pub struct Steering {
    /// The prompt.
    pub prompt: String,
    /// The negative prompt (an emoji name).
    pub negative: String,
    /// Distance from the picture drawn without a negative prompt to the negative's emoji
    /// (block-averaged, as the recognisability test measures).
    pub without: f64,
    /// The same for the picture drawn with it (same seed, steps and guidance).
    pub with: f64,
    /// Rank of the prompt's own emoji among all images for the picture drawn with the
    /// negative prompt (1 = nearest): steering away from one emoji must not stop the
    /// picture from being the prompt's.
    pub rank_with: usize,
}

impl Steering {
    /// The negative prompt moved the picture away from what it names.
    pub fn moved_away(&self) -> bool {
        self.with > self.without
    }
}

/// Draws each pair's prompt twice with the same options (seed = `opts.seed` + its index),
/// once without and once with its negative prompt, and measures how far each picture is
/// from the emoji the negative prompt names: classifier-free guidance from the negative
/// prompt's embedding instead of the empty prompt's should push the picture away from it.
pub fn negative_steering(
    model: &TinyModel,
    encoder: &dyn TextEncoder,
    dataset: &EmojiDataset,
    pairs: &[(&str, &str)],
    opts: &SampleOptions,
) -> Result<Vec<Steering>, tiny::Error> {
    let refs: Vec<Features> = dataset
        .emoji
        .iter()
        .map(|e| features(&dataset::rgba_on_white(&e.rgba)))
        .collect();
    let named = |text: &str| -> Result<Vec<usize>, tiny::Error> {
        let name = tiny::normalize_prompt(text);
        let idx: Vec<usize> = (0..dataset.emoji.len())
            .filter(|&i| dataset.emoji[i].name == name)
            .collect();
        if idx.is_empty() {
            return Err(tiny::Error::Invalid(format!("no emoji is named {name:?}")));
        }
        Ok(idx)
    };
    let mut out = Vec::with_capacity(pairs.len());
    for (i, &(prompt, negative)) in pairs.iter().enumerate() {
        let own = named(prompt)?;
        let avoided = named(negative)?;
        let opts = SampleOptions {
            seed: opts.seed.wrapping_add(i as u64),
            ..*opts
        };
        let distance = |image: &Image| {
            let f = features(&image.rgb);
            avoided
                .iter()
                .map(|&t| sq(&refs[t].small, &f.small))
                .fold(f64::INFINITY, f64::min)
        };
        let mut go_on = |_: tiny::Progress<'_>| std::ops::ControlFlow::Continue(());
        let without = model.generate_guided(encoder, prompt, "", &opts, &mut go_on)?;
        let with = model.generate_guided(encoder, prompt, negative, &opts, &mut go_on)?;
        out.push(Steering {
            prompt: prompt.to_owned(),
            negative: negative.to_owned(),
            without: distance(&without),
            with: distance(&with),
            rank_with: rank(&refs, &with.rgb, &own).0,
        });
    }
    Ok(out)
}

/// How many of the given samples the VAE alone reconstructs recognisably (their
/// reconstruction's rank within [`TOP`]): the ceiling for the whole model.
pub fn reconstruction_hits(model: &TinyModel, dataset: &EmojiDataset, indices: &[usize]) -> usize {
    let refs: Vec<Features> = dataset
        .emoji
        .iter()
        .map(|e| features(&dataset::rgba_on_white(&e.rgba)))
        .collect();
    let mut hits = 0;
    for chunk in indices.chunks(32) {
        let mut images = Vec::new();
        for &i in chunk {
            images.extend(dataset.emoji[i].rgb_signed());
        }
        let (mean, _) = model.vae.encode(&images, chunk.len());
        let px = model.vae.decode(&mean, chunk.len());
        for (&i, x) in chunk
            .iter()
            .zip(px.chunks_exact(tiny::IMAGE * tiny::IMAGE * 3))
        {
            let img = Image::from_signed(x, tiny::IMAGE);
            if rank(&refs, &img.rgb, &[i]).0 <= TOP {
                hits += 1;
            }
        }
    }
    hits
}
