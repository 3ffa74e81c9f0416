//! Where a KV profile's perplexity loss comes from (issue #16's study): runs the model once
//! with the fp16 cache, then once per configuration with some streams coded, and prints the
//! perplexity delta and the mean KL divergence from the fp16 run.
//!
//! `cargo run --example kv_study -- MODEL TEXT TOKENS CHUNKS CONFIGS P0.json [P1.json ...]`
//!
//! Each line of CONFIGS is `name keys values [window]`: `keys` and `values` have one
//! character per layer, `-` for the fp16 cache, `0`..`9` for the profile of that index (its
//! pages, protected tokens and channel maps); `window` (default: the profiles' own
//! `protected.last_tokens`) sets every profile's recent window, the newest tokens each
//! query reads from the fp16 cache (stored raw, so counted at 16 bits). Output: one line per configuration,
//! `name delta_ppl mean_kl bits_per_value noise`, `noise` the perplexity delta's sampling
//! noise (fp16 perplexity times the standard error of the mean per-token NLL increase). `scripts/kv_study.py` writes the configurations
//! of the study and reads its output.

use anyhow::{bail, Context, Result};
use qforge::kv::capture::{CacheHook, Perplexity, Runner};
use qforge::kv::{KvProfile, LayerKv, PagedCodec};
use std::path::Path;

/// Log-softmax of the rows `from..to` of `[T, vocab]` logits.
fn log_probs(logits: &[f32], vocab: usize, from: usize, to: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity((to - from) * vocab);
    for j in from..to {
        let row = &logits[j * vocab..(j + 1) * vocab];
        let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
        let lse = max
            + row
                .iter()
                .map(|&x| (x as f64 - max).exp())
                .sum::<f64>()
                .ln();
        out.extend(row.iter().map(|&x| (x as f64 - lse) as f32));
    }
    out
}

/// Mean KL(p || q) over rows of two log-probability tables.
fn mean_kl(p: &[f32], q: &[f32], vocab: usize) -> f64 {
    let rows = p.len() / vocab;
    let mut kl = 0f64;
    for (a, b) in p.chunks_exact(vocab).zip(q.chunks_exact(vocab)) {
        kl += a
            .iter()
            .zip(b)
            .map(|(&x, &y)| (x as f64).exp() * (x as f64 - y as f64))
            .sum::<f64>();
    }
    kl / rows.max(1) as f64
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 6 {
        bail!("usage: kv_study MODEL TEXT TOKENS CHUNKS CONFIGS P0.json [P1.json ...]");
    }
    let runner = Runner::open(Path::new(&args[0]), None)?;
    let n: usize = args[2].parse()?;
    let chunks: usize = args[3].parse()?;
    let configs = std::fs::read_to_string(&args[4])?;
    let profiles: Vec<KvProfile> = args[5..]
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p)?;
            KvProfile::from_json(&text).context(p.clone())
        })
        .collect::<Result<_>>()?;
    let vocab = runner.model.config.vocab;
    let layers = runner.model.config.layers;
    let all = runner.tokens(Path::new(&args[1]), n * chunks)?;
    let seqs: Vec<&[u32]> = all.chunks_exact(n).collect();
    // KL over the scored half of each chunk (where perplexity is measured too).
    let (from, to) = (n / 2, n - 1);
    let mut base = Vec::new();
    let mut base_ppl = Vec::new();
    for s in &seqs {
        let logits = runner
            .model
            .forward(s, &mut CacheHook::new(|_, kv: LayerKv| Ok(kv), 0))?;
        base_ppl.push(Perplexity::of(&logits, s, vocab));
        base.push(log_probs(&logits, vocab, from, to));
    }
    let fp16_run = Perplexity::combine(&base_ppl);
    let fp16 = fp16_run.perplexity;
    println!("fp16 {fp16:.4}");
    for line in configs.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (name, keys, values, window) = match f[..] {
            [name, keys, values] => (name, keys, values, None),
            [name, keys, values, w] => (name, keys, values, Some(w.parse::<usize>()?)),
            _ => bail!("bad config line {line:?}"),
        };
        let codecs: Vec<PagedCodec> = profiles
            .iter()
            .map(|p| {
                let mut p = p.clone();
                if let Some(w) = window {
                    p.protected.last_tokens = w;
                    p.digests = p.compute_digests()?;
                }
                PagedCodec::new(&p)
            })
            .collect::<Result<_>>()?;
        let window = codecs[0].profile().protected.last_tokens;
        let pick = |s: &str| -> Result<Vec<Option<usize>>> {
            if s.len() != layers {
                bail!("{name}: {} layers given, the model has {layers}", s.len());
            }
            Ok(s.chars()
                .map(|c| c.to_digit(10).map(|d| d as usize))
                .collect())
        };
        let (kt, vt) = (pick(keys)?, pick(values)?);
        let mut parts = Vec::new();
        let mut kl = 0f64;
        let mut bits = (0f64, 0f64);
        for (s, b) in seqs.iter().zip(&base) {
            let t = s.len();
            let mut hook = CacheHook::new(
                |l: usize, kv: LayerKv| {
                    let mut out = kv.clone();
                    for (tier, key) in [(kt[l], true), (vt[l], false)] {
                        let Some(i) = tier else {
                            bits.0 += 16.0 * kv.keys.len() as f64;
                            bits.1 += kv.keys.len() as f64;
                            continue;
                        };
                        let pc = &codecs[i];
                        let enc = pc.encode_layer(l, &kv)?;
                        let one = qforge::kv::EncodedKv {
                            head_dim: kv.keys[0].cols(),
                            tokens: t,
                            layers: vec![if key {
                                qforge::kv::paging::EncodedLayer {
                                    keys: enc.keys.clone(),
                                    values: Vec::new(),
                                }
                            } else {
                                qforge::kv::paging::EncodedLayer {
                                    keys: Vec::new(),
                                    values: enc.values.clone(),
                                }
                            }],
                        };
                        let st = one.stats();
                        bits.0 += st.effective_bits_per_value * kv.keys.len() as f64;
                        bits.1 += kv.keys.len() as f64;
                        let dec = pc.decode_layer(l, &enc, t)?;
                        if key {
                            out.keys = dec.keys;
                        } else {
                            out.values = dec.values;
                        }
                    }
                    Ok(out)
                },
                window,
            );
            let logits = runner.model.forward(s, &mut hook)?;
            parts.push(Perplexity::of(&logits, s, vocab));
            let lp = log_probs(&logits, vocab, from, to);
            kl += mean_kl(b, &lp, vocab);
        }
        let coded = Perplexity::combine(&parts);
        let noise = fp16_run.delta_noise(&coded);
        let p = coded.perplexity;
        println!(
            "{name} {:+.4} {:.6} {:.4} {noise:.4}",
            p - fp16,
            kl / seqs.len() as f64,
            bits.0 / bits.1.max(1.0)
        );
    }
    Ok(())
}
