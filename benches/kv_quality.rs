//! Quality table on synthetic KV: every codec on keys and values, scored with
//! the attention metrics. `cargo bench --bench kv_quality [-- TOKENS]`.

use anyhow::Result;
use qforge::kv::baselines::{q4_0, q8_0, turboquant, Kivi};
use qforge::kv::codec::{KvCodec, VqParams};
use qforge::kv::receipt::{compare_kv, round_trip_kv};
use qforge::kv::synth::{synth_kv, SynthConfig};
use qforge::kv::tensor::KvRole;

fn main() -> Result<()> {
    let tokens: usize = std::env::args()
        .skip(1)
        // `cargo bench` passes `--bench`: only a plain number is ours.
        .find(|a| !a.starts_with("--"))
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1024);
    let d = 128;
    let cfg = SynthConfig {
        layers: 4,
        kv_heads: 2,
        query_heads: 8,
        head_dim: d,
        tokens,
        n_queries: 32,
        seed: 1,
        ..SynthConfig::default()
    };
    let (kv, queries) = synth_kv(&cfg)?;
    // Independent synthetic cache for the calibrated variant.
    let (cal, _) = synth_kv(&SynthConfig {
        seed: 99,
        ..cfg.clone()
    })?;
    let cal_rows = cal.rows(KvRole::Both);

    let fib = |k: usize, n: usize, calibrated: bool| -> Result<Box<dyn KvCodec>> {
        let mut p = VqParams::new(d, k, n);
        p.seed = 7;
        let name = format!("fibquant-k{k}-n{n}{}", if calibrated { "-cal" } else { "" });
        Ok(Box::new(
            p.build(&name, calibrated.then_some(cal_rows.as_slice()))?,
        ))
    };
    let turbo = |b: u32| -> Result<Box<dyn KvCodec>> { Ok(Box::new(turboquant(d, b, 7, None)?)) };
    let kivi = |b: u32, g: usize| -> Result<(Box<dyn KvCodec>, Box<dyn KvCodec>)> {
        Ok((
            Box::new(Kivi::keys(d, b, g)?),
            Box::new(Kivi::values(d, b, g)?),
        ))
    };
    // (label, key codec, value codec; None = the key codec for values too).
    type Row = (String, Box<dyn KvCodec>, Option<Box<dyn KvCodec>>);
    let shared = |c: Box<dyn KvCodec>| -> Row { (c.name(), c, None) };
    let mut rows: Vec<Row> = vec![
        shared(fib(8, 256, false)?),
        shared(fib(4, 32, false)?),
        shared(turbo(1)?),
        shared(fib(4, 256, false)?),
        shared(fib(4, 256, true)?),
        shared(fib(2, 16, false)?),
        shared(turbo(2)?),
        shared(fib(2, 64, false)?),
        shared(fib(4, 4096, false)?),
        shared(turbo(3)?),
        shared(fib(2, 256, false)?),
        shared(turbo(4)?),
        shared(Box::new(q4_0(d)?)),
        shared(Box::new(q8_0(d)?)),
    ];
    for (b, g) in [(2, 128), (2, 32), (3, 128), (4, 128)] {
        let (k, v) = kivi(b, g)?;
        rows.push((format!("kivi-b{b}-g{g}"), k, Some(v)));
    }
    rows.sort_by(|a, b| a.1.bits_per_value().total_cmp(&b.1.bits_per_value()));

    println!(
        "synthetic KV: {} layers x {} KV heads ({} query heads), d={d}, {tokens} tokens, {} queries/head\n",
        cfg.layers, cfg.kv_heads, cfg.query_heads, cfg.n_queries
    );
    println!("| codec | bits/value | key MSE | key cos | value MSE | value cos | key-logit MSE | attn TV | KL | top-8 disagree | value-agg rel MSE |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (name, kc, vc) in &rows {
        let vc: &dyn KvCodec = vc.as_deref().unwrap_or(kc.as_ref());
        let recon = round_trip_kv(&kv, Some(kc.as_ref()), Some(vc))?;
        let (m, _) = compare_kv(&kv, &recon, &queries, 8)?;
        println!(
            "| {name} | {:.3} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} |",
            kc.bits_per_value(),
            m.key_mse,
            m.key_cosine,
            m.value_mse,
            m.value_cosine,
            m.key_logit_mse,
            m.attention_tv,
            m.attention_kl,
            m.topk_disagreement,
            m.value_agg_rel_mse
        );
    }
    Ok(())
}
