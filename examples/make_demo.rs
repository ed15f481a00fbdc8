//! Writes the embedded demo fixture: a tiny base/chat Gemma-2 pair with planted mechanisms, its
//! tokenizer, corpus and `demo.json` (see `stereo::demo` and `fixtures/demo/README.md`).
//!
//! ```sh
//! cargo run --release --example make_demo -- --out fixtures/demo
//! cargo run --release --example make_demo -- --out /tmp/control --no-plant   # chat = base
//! ```

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use stereo::demo::{generate, DemoSpec, Mechanism, CORPUS_ENTRIES, DEFAULT_SEED};

#[derive(Parser, Debug)]
#[command(about = "Generate the demo base/chat pair, tokenizer and corpus")]
struct Args {
    /// Seed of everything (directions, weights, corpus).
    #[arg(long, default_value_t = DEFAULT_SEED)]
    seed: u64,
    /// Output directory (created if needed; files in it are overwritten).
    #[arg(long, default_value = "fixtures/demo")]
    out: PathBuf,
    /// Do not plant the mechanisms: the chat model equals the base model (negative control).
    #[arg(long)]
    no_plant: bool,
    /// Number of corpus entries.
    #[arg(long, default_value_t = CORPUS_ENTRIES, value_parser = stereo::cli::count)]
    corpus_entries: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let spec = DemoSpec {
        seed: args.seed,
        plant: !args.no_plant,
        corpus_entries: args.corpus_entries,
    };
    let start = Instant::now();
    let manifest = generate(&spec, &args.out)?;
    println!(
        "wrote {} in {:.1} s: vocab {} tokens ({} words), corpus {} entries, hook {}",
        args.out.display(),
        start.elapsed().as_secs_f64(),
        manifest.vocab_size,
        manifest.vocab_words,
        manifest.corpus_entries,
        manifest.hook
    );
    for (name, effects) in [
        ("corpus", &manifest.corpus_effects),
        ("persona", &manifest.persona_effects),
    ] {
        println!(
            "{name}: {} prompts without a cue, max |chat - base| / |base| there = {:.2e}",
            effects.no_cue_prompts, effects.no_cue_max_relative_diff
        );
        for (m, e) in Mechanism::ALL.iter().zip(&effects.mechanisms) {
            println!(
                "  {m:>12}: {} prompts; |diff| on cue {:.3}, after {:.3}, before {:.2e}; |resid| {:.3}; \
                 projection {:.3}, cross-talk {:.3}; cosine per prompt min {:.3} mean {:.3}, per token {:.3}",
                e.prompts,
                e.diff_norm_on_cue,
                e.diff_norm_after_cue,
                e.diff_norm_before_cue,
                e.resid_norm,
                e.projection_after_cue,
                e.cross_projection,
                e.prompt_cosine_min,
                e.prompt_cosine_mean,
                e.token_cosine_mean
            );
        }
    }
    for m in &manifest.mechanisms {
        println!(
            "{}: measured vs designed direction cosine {:.4}",
            m.mechanism, m.measured_vs_designed_cosine
        );
    }
    Ok(())
}
