//! Prints the six largest next-token logits after a sequence of token ids, to compare
//! against another engine: `logits MODEL.gguf 1,2,3`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or("usage: logits MODEL.gguf IDS")?;
    let ids: Vec<u32> = args
        .next()
        .ok_or("ids")?
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let model = aura_infer::Model::load(
        &aura_infer::ModelFiles::Gguf(path.into()),
        &aura_infer::LoadOptions::default(),
    )?;
    let logits = model.session().feed(&ids)?;
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    let top: Vec<(usize, f32)> = order[..6].iter().map(|&i| (i, logits[i])).collect();
    println!("{top:?}");
    Ok(())
}
