# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_qforge_global_optspecs
    string join \n v/verbose q/quiet h/help V/version
end

function __fish_qforge_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_qforge_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_qforge_using_subcommand
    set -l cmd (__fish_qforge_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c qforge -n "__fish_qforge_needs_command" -s v -l verbose -d 'More log output on stderr: -v the plan (info), -vv per-tensor timing (debug), -vvv trace; RUST_LOG overrides'
complete -c qforge -n "__fish_qforge_needs_command" -s q -l quiet -d 'No progress bar and no text report (JSON with --json and errors still print)'
complete -c qforge -n "__fish_qforge_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c qforge -n "__fish_qforge_needs_command" -s V -l version -d 'Print version'
complete -c qforge -n "__fish_qforge_needs_command" -f -a "quantize" -d 'Quantize a safetensors or GGUF model to GGUF (llama.cpp types and mixes)'
complete -c qforge -n "__fish_qforge_needs_command" -f -a "export-native" -d 'Write the native QNAT format (NF4/FP4 with double quantization, k-quants, floats)'
complete -c qforge -n "__fish_qforge_needs_command" -f -a "inspect" -d 'Show format, metadata and tensors of a safetensors, GGUF or QNAT file'
complete -c qforge -n "__fish_qforge_needs_command" -f -a "kv-profile" -d 'Build or verify KV-cache compression profiles'
complete -c qforge -n "__fish_qforge_needs_command" -f -a "bench-gemm" -d 'Benchmark dequant-GEMM/GEMV kernels against a roofline and candle'
complete -c qforge -n "__fish_qforge_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c qforge -n "__fish_qforge_using_subcommand quantize" -s o -l output -d 'Output file (a folder with --format bnb-safetensors)' -r -F
complete -c qforge -n "__fish_qforge_using_subcommand quantize" -s t -l type -d 'Target type or llama.cpp mix by name (default Q4_K_M; with --format bnb-safetensors or qnat, NF4). Names only: llama-quantize\'s numeric ids are taken in the positional form. --list-types shows every type llama-quantize knows' -r -f -a "Q1_0\t'base Q1_0; 1.125 bpw quantization'
Q2_0\t'base Q2_0; 2.25 bpw quantization (group 64)'
Q4_0\t'base Q4_0; 4.34G, +0.4685 ppl @ Llama-3-8B'
Q4_1\t'base Q4_1; 4.78G, +0.4511 ppl @ Llama-3-8B'
MXFP4_MOE\t'base MXFP4; MXFP4 MoE'
Q5_0\t'base Q5_0; 5.21G, +0.1316 ppl @ Llama-3-8B'
Q5_1\t'base Q5_1; 5.65G, +0.1062 ppl @ Llama-3-8B'
IQ2_XXS\t'base IQ2_XXS; 2.06 bpw quantization'
IQ2_XS\t'base IQ2_XS; 2.31 bpw quantization'
IQ2_S\t'base IQ2_XS; 2.5  bpw quantization'
IQ2_M\t'base IQ2_S; 2.7  bpw quantization'
IQ1_S\t'base IQ1_S; 1.56 bpw quantization'
IQ1_M\t'base IQ1_M; 1.75 bpw quantization'
TQ1_0\t'base TQ1_0; 1.69 bpw ternarization'
TQ2_0\t'base TQ2_0; 2.06 bpw ternarization'
Q2_K\t'base Q2_K; 2.96G, +3.5199 ppl @ Llama-3-8B'
Q2_K_S\t'base Q2_K; 2.96G, +3.1836 ppl @ Llama-3-8B'
IQ3_XXS\t'base IQ3_XXS; 3.06 bpw quantization'
IQ3_S\t'base IQ3_S; 3.44 bpw quantization'
IQ3_M\t'base IQ3_S; 3.66 bpw quantization mix'
Q3_K\t'alias for Q3_K_M (with --format qnat: plain Q3_K)'
IQ3_XS\t'base IQ3_S; 3.3 bpw quantization'
Q3_K_S\t'base Q3_K; 3.41G, +1.6321 ppl @ Llama-3-8B'
Q3_K_M\t'base Q3_K; 3.74G, +0.6569 ppl @ Llama-3-8B'
Q3_K_L\t'base Q3_K; 4.03G, +0.5562 ppl @ Llama-3-8B'
IQ4_NL\t'base IQ4_NL; 4.50 bpw non-linear quantization'
IQ4_XS\t'base IQ4_XS; 4.25 bpw non-linear quantization'
Q4_K\t'alias for Q4_K_M (with --format qnat: plain Q4_K)'
Q4_K_S\t'base Q4_K; 4.37G, +0.2689 ppl @ Llama-3-8B'
Q4_K_M\t'base Q4_K; 4.58G, +0.1754 ppl @ Llama-3-8B'
Q5_K\t'alias for Q5_K_M (with --format qnat: plain Q5_K)'
Q5_K_S\t'base Q5_K; 5.21G, +0.1049 ppl @ Llama-3-8B'
Q5_K_M\t'base Q5_K; 5.33G, +0.0569 ppl @ Llama-3-8B'
Q6_K\t'base Q6_K; 6.14G, +0.0217 ppl @ Llama-3-8B'
Q8_0\t'base Q8_0; 7.96G, +0.0026 ppl @ Llama-3-8B'
F16\t'base F16; 14.00G, +0.0020 ppl @ Mistral-7B'
BF16\t'base BF16; 14.00G, -0.0050 ppl @ Mistral-7B'
F32\t'base F32; 26.00G              @ 7B'
COPY\t'only copy tensors, no quantizing'
NF4\t'bitsandbytes NormalFloat4 (--format bnb-safetensors or qnat)'
FP4\t'bitsandbytes FP4 (--format bnb-safetensors or qnat)'"
complete -c qforge -n "__fish_qforge_using_subcommand quantize" -l format -d 'Output container' -r -f -a "gguf\t'GGUF v3 (llama.cpp)'
qnat\t'qforge\'s native QNAT v2'
bnb-safetensors\t'Hugging Face safetensors in the bitsandbytes 4-bit layout'"
complete -c qforge -n "__fish_qforge_using_subcommand quantize" -l tensor-type -d 'Per-tensor type override, REGEX=TYPE; repeatable, the first match wins. TYPE (any case): F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ2_XXS, IQ2_XS, IQ3_XXS, IQ1_S, IQ4_NL, IQ3_S, IQ2_S, IQ4_XS, IQ1_M, BF16, TQ1_0, TQ2_0, MXFP4, Q1_0, Q2_0' -r
complete -c qforge -n "__fish_qforge_using_subcommand quantize" -l tensor-type-file -d 'A file of REGEX=TYPE overrides separated by spaces or newlines (after --tensor-type\'s)' -r -F
complete -c qforge -n "__fish_qforge_using_subcommand quantize" -l prune-layers -d 'Remove these blocks (blk.N) and renumber the later ones; sets ARCH.block_count' -r
complete -c qforge -n "__fish_qforge_using_subcommand quantize" -l override-kv -d 'Set a metadata key in the output: KEY=TYPE:VALUE, TYPE int (written u32), float (f32), bool or str; repeatable' -r
complete -c qforge -n "__fish_qforge_using_subcommand quantize" -l max-buffer-size -d 'llama-quantize\'s row buffer limit in MiB; accepted for drop-in use (qforge encodes a tensor in chunks of about 8 MiB whatever the value)' -r
complete -c qforge -n "__fish_qforge_using_subcommand quantize" -l output-tensor-type -d 'Type of output.weight' -r -f -a "F32\t''
F16\t''
Q4_0\t''
Q4_1\t''
Q5_0\t''
Q5_1\t''
Q8_0\t''
Q2_K\t''
Q3_K\t''
Q4_K\t''
Q5_K\t''
Q6_K\t''
IQ2_XXS\t''
IQ2_XS\t''
IQ3_XXS\t''
IQ1_S\t''
IQ4_NL\t''
IQ3_S\t''
IQ2_S\t''
IQ4_XS\t''
IQ1_M\t''
BF16\t''
TQ1_0\t''
TQ2_0\t''
MXFP4\t''
Q1_0\t''
Q2_0\t''"
complete -c qforge -n "__fish_qforge_using_subcommand quantize" -l token-embedding-type -d 'Type of token_embd.weight' -r -f -a "F32\t''
F16\t''
Q4_0\t''
Q4_1\t''
Q5_0\t''
Q5_1\t''
Q8_0\t''
Q2_K\t''
Q3_K\t''
Q4_K\t''
Q5_K\t''
Q6_K\t''
IQ2_XXS\t''
IQ2_XS\t''
IQ3_XXS\t''
IQ1_S\t''
IQ4_NL\t''
IQ3_S\t''
IQ2_S\t''
IQ4_XS\t''
IQ1_M\t''
BF16\t''
TQ1_0\t''
TQ2_0\t''
MXFP4\t''
Q1_0\t''
Q2_0\t''"
complete -c qforge -n "__fish_qforge_using_subcommand quantize" -l imatrix -d 'Importance matrix: GGUF imatrix or legacy llama.cpp .dat' -r -F
complete -c qforge -n "__fish_qforge_using_subcommand quantize" -l include-weights -d 'Use importance weights only for tensors matching this regex (repeatable)' -r
complete -c qforge -n "__fish_qforge_using_subcommand quantize" -l exclude-weights -d 'Do not use importance weights for tensors matching this regex (repeatable)' -r
complete -c qforge -n "__fish_qforge_using_subcommand quantize" -l block-size -d 'NF4/FP4 block size (bnb-safetensors, qnat)' -r
complete -c qforge -n "__fish_qforge_using_subcommand quantize" -l compute-dtype -d 'Compute dtype recorded for NF4/FP4 outputs (bnb-safetensors, qnat)' -r -f -a "f32\t'float32'
f16\t'float16'
bf16\t'bfloat16'"
complete -c qforge -n "__fish_qforge_using_subcommand quantize" -l threads -d 'Worker threads (default: all cores). Output bytes do not depend on it' -r
complete -c qforge -n "__fish_qforge_using_subcommand quantize" -l isa -d 'Instruction set of the kernels (default: the best this CPU has, or QFORGE_ISA)' -r -f -a "auto\t'The QFORGE_ISA environment variable if set, else the best this CPU has'
avx512\t'AVX-512 (with VNNI where a kernel uses it and the CPU has it)'
avx2\t'AVX2 with FMA and F16C'
scalar\t'Portable code, no SIMD'"
complete -c qforge -n "__fish_qforge_using_subcommand quantize" -l name -d 'Hugging Face folder: general.name (convert_hf_to_gguf.py --model-name)' -r
complete -c qforge -n "__fish_qforge_using_subcommand quantize" -l metadata -d 'Hugging Face folder: JSON file of general.* overrides (convert_hf_to_gguf.py --metadata)' -r -F
complete -c qforge -n "__fish_qforge_using_subcommand quantize" -l list-types -d 'List every type and mix llama-quantize knows (bits per weight, whether an importance matrix is required, whether qforge implements it) and exit'
complete -c qforge -n "__fish_qforge_using_subcommand quantize" -l keep-split -d 'Split input: write one output file per input file, named OUTPUT-0000i-of-0000N.gguf (OUTPUT without .gguf) with gguf-split\'s split.* keys'
complete -c qforge -n "__fish_qforge_using_subcommand quantize" -l pure -d 'Use the base type for every tensor: no mix rules'
complete -c qforge -n "__fish_qforge_using_subcommand quantize" -l leave-output-tensor -d 'Leave output.weight unquantized'
complete -c qforge -n "__fish_qforge_using_subcommand quantize" -l allow-requantize -d 'Allow re-quantizing tensors that are already quantized'
complete -c qforge -n "__fish_qforge_using_subcommand quantize" -l allow-nonfinite -d 'Quantize tensors with NaN or infinite values instead of refusing'
complete -c qforge -n "__fish_qforge_using_subcommand quantize" -l digest -d 'Report the output\'s SHA-256 (computed on the bytes as they are written; off by default, as llama-quantize computes none)'
complete -c qforge -n "__fish_qforge_using_subcommand quantize" -l double-quant -d 'Double-quantize the NF4/FP4 absmax values (bnb-safetensors, qnat)'
complete -c qforge -n "__fish_qforge_using_subcommand quantize" -l dry-run -d 'Print the plan and the output size; write nothing'
complete -c qforge -n "__fish_qforge_using_subcommand quantize" -l json -d 'Print one JSON document on stdout (schema qforge.quantize/2, see docs/quantize-json.md; with --list-types qforge.quantize-types/1)'
complete -c qforge -n "__fish_qforge_using_subcommand quantize" -l raw-names -d 'Hugging Face folder: keep the checkpoint\'s tensor names and write no hyperparameters or tokenizer (a GGUF llama.cpp cannot load; on purpose only)'
complete -c qforge -n "__fish_qforge_using_subcommand quantize" -l no-vocab -d 'Hugging Face folder: write no tokenizer keys (for a folder without a tokenizer)'
complete -c qforge -n "__fish_qforge_using_subcommand quantize" -s v -l verbose -d 'More log output on stderr: -v the plan (info), -vv per-tensor timing (debug), -vvv trace; RUST_LOG overrides'
complete -c qforge -n "__fish_qforge_using_subcommand quantize" -s q -l quiet -d 'No progress bar and no text report (JSON with --json and errors still print)'
complete -c qforge -n "__fish_qforge_using_subcommand quantize" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c qforge -n "__fish_qforge_using_subcommand quantize" -s V -l version -d 'Print version'
complete -c qforge -n "__fish_qforge_using_subcommand export-native" -s o -l output -d 'Output file (.qnat; with --dequantize, .safetensors)' -r -F
complete -c qforge -n "__fish_qforge_using_subcommand export-native" -l scheme -d 'Scheme for float weight tensors' -r -f -a "nf4\t'bitsandbytes NormalFloat4'
fp4\t'bitsandbytes FP4'
q4_k\t'ggml Q4_K'
q5_k\t'ggml Q5_K'
q6_k\t'ggml Q6_K'
q8_0\t'ggml Q8_0'
f16\t'IEEE half'
bf16\t'bfloat16'
f32\t'IEEE single'"
complete -c qforge -n "__fish_qforge_using_subcommand export-native" -l block-size -d 'Block size for NF4/FP4 (power of two, 32..4096)' -r
complete -c qforge -n "__fish_qforge_using_subcommand export-native" -l model-name -d 'Model name stored in the metadata (default: input file stem)' -r
complete -c qforge -n "__fish_qforge_using_subcommand export-native" -l compute-dtype -d 'Compute dtype stored in the metadata' -r -f -a "f32\t'float32'
f16\t'float16'
bf16\t'bfloat16'"
complete -c qforge -n "__fish_qforge_using_subcommand export-native" -l scales -d 'Scales of qlora-rs double-quantized tensors (--dequantize and migration): the 8-bit scales as stored, which qlora-rs\'s own decode uses, or the exact f32 scales (only qlora-rs 1.0 files keep them)' -r -f -a "stored\t'the 8-bit scales as stored: `(code - 128) * factor`, as qlora-rs decodes them'
exact\t'the exact f32 scales (qlora-rs 1.0 files only)'"
complete -c qforge -n "__fish_qforge_using_subcommand export-native" -l threads -d 'Worker threads (default: all cores)' -r
complete -c qforge -n "__fish_qforge_using_subcommand export-native" -l isa -d 'Instruction set of the kernels (default: the best this CPU has, or QFORGE_ISA)' -r -f -a "auto\t'The QFORGE_ISA environment variable if set, else the best this CPU has'
avx512\t'AVX-512 (with VNNI where a kernel uses it and the CPU has it)'
avx2\t'AVX2 with FMA and F16C'
scalar\t'Portable code, no SIMD'"
complete -c qforge -n "__fish_qforge_using_subcommand export-native" -l double-quant -d 'Quantize the per-block absmax values again (8-bit, 256 per block)'
complete -c qforge -n "__fish_qforge_using_subcommand export-native" -l dequantize -d 'Dequantize a QNAT input (qforge\'s v2 or a qlora-rs file) back to f32 safetensors'
complete -c qforge -n "__fish_qforge_using_subcommand export-native" -l allow-nonfinite -d 'Quantize tensors with NaN or infinite values instead of refusing'
complete -c qforge -n "__fish_qforge_using_subcommand export-native" -l json -d 'Print one JSON document on stdout (schema qforge.quantize/2; with --dequantize qforge.export-native-dequantize/1; see docs/export-native-json.md)'
complete -c qforge -n "__fish_qforge_using_subcommand export-native" -s v -l verbose -d 'More log output on stderr: -v the plan (info), -vv per-tensor timing (debug), -vvv trace; RUST_LOG overrides'
complete -c qforge -n "__fish_qforge_using_subcommand export-native" -s q -l quiet -d 'No progress bar and no text report (JSON with --json and errors still print)'
complete -c qforge -n "__fish_qforge_using_subcommand export-native" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c qforge -n "__fish_qforge_using_subcommand export-native" -s V -l version -d 'Print version'
complete -c qforge -n "__fish_qforge_using_subcommand inspect" -l filter -d 'Only tensors whose name matches this regular expression (totals follow the filter)' -r
complete -c qforge -n "__fish_qforge_using_subcommand inspect" -l max-array -d 'Array values longer than this are cut (JSON: elements kept; text: elements shown)' -r
complete -c qforge -n "__fish_qforge_using_subcommand inspect" -l json -d 'Print one JSON document (schema qforge.inspect/1, see docs/inspect-json.md)'
complete -c qforge -n "__fish_qforge_using_subcommand inspect" -l tensors -d 'List every tensor in the text output (JSON always lists them)'
complete -c qforge -n "__fish_qforge_using_subcommand inspect" -l verify -d 'Also read all tensor data and check stored checksums (QNAT)'
complete -c qforge -n "__fish_qforge_using_subcommand inspect" -s v -l verbose -d 'More log output on stderr: -v the plan (info), -vv per-tensor timing (debug), -vvv trace; RUST_LOG overrides'
complete -c qforge -n "__fish_qforge_using_subcommand inspect" -s q -l quiet -d 'No progress bar and no text report (JSON with --json and errors still print)'
complete -c qforge -n "__fish_qforge_using_subcommand inspect" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c qforge -n "__fish_qforge_using_subcommand inspect" -s V -l version -d 'Print version'
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and not __fish_seen_subcommand_from build verify capture help" -s v -l verbose -d 'More log output on stderr: -v the plan (info), -vv per-tensor timing (debug), -vvv trace; RUST_LOG overrides'
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and not __fish_seen_subcommand_from build verify capture help" -s q -l quiet -d 'No progress bar and no text report (JSON with --json and errors still print)'
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and not __fish_seen_subcommand_from build verify capture help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and not __fish_seen_subcommand_from build verify capture help" -s V -l version -d 'Print version'
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and not __fish_seen_subcommand_from build verify capture help" -f -a "build" -d 'Build a KV-cache compression profile (JSON)'
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and not __fish_seen_subcommand_from build verify capture help" -f -a "verify" -d 'Verify a profile on evaluation KV and write a receipt (exit 3 when over budget)'
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and not __fish_seen_subcommand_from build verify capture help" -f -a "capture" -d 'Run a model on a text and write its post-RoPE keys, values and queries (safetensors)'
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and not __fish_seen_subcommand_from build verify capture help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from build" -l shape -d 'KV shape as layers=L,kv_heads=H,query_heads=Q,head_dim=D,tokens=T' -r
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from build" -l from-model -d 'Take the shape from a GGUF file\'s metadata or a Hugging Face config.json' -r -F
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from build" -l calibration -d 'Calibration KV (safetensors with layer.{i}.key / layer.{i}.value, [kv_heads, tokens, head_dim])' -r -F
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from build" -l codec -d 'Codec family' -r -f -a "fibquant\t'Radial-angular vector codebook (FibQuant)'
turboquant\t'Rotation + per-coordinate Lloyd-Max scalar codebook (TurboQuant-style)'"
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from build" -l bits -d 'Bits per codeword index (codebook size 2^bits) unless --codebook-size is given' -r
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from build" -l block-dim -d 'Coordinates per codeword (k: 2, 4 or 8 for fibquant; turboquant uses 1)' -r
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from build" -l codebook-size -d 'Codewords in the codebook (N, a power of two; default 256)' -r
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from build" -l seed -d 'Seed of the rotation and of the training samples' -r
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from build" -l role -d 'Which tensors are compressed' -r -f -a "key\t'Keys only'
value\t'Values only'
both\t'Keys and values'"
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from build" -l norm-bits -d 'Bits of each row\'s norm: 16 (fp16) or 8 (log scale near 1; needs channel maps for every coded role, docs/kv-profile.md §1)' -r
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from build" -l tier -d 'Extra codecs (tiers) as BLOCK_DIMxBITS, e.g. `2x12` (k = 2, N = 4096); tier i is codec i of --key-codecs / --value-codecs (0 is --block-dim/--bits), with its own codebook trained on the calibration rows of the streams it codes (docs/kv-profile.md §5b)' -r
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from build" -l key-codecs -d 'Codec of each layer\'s keys (comma-separated, one per layer, or one for all); needs --tier' -r
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from build" -l value-codecs -d 'Codec of each layer\'s values (comma-separated, one per layer, or one for all); needs --tier' -r
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from build" -l tokens-per-page -d 'Tokens per page' -r
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from build" -l protect-first -d 'Keep the first N tokens of every head raw (attention sinks)' -r
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from build" -l protect-last -d 'Keep the last N tokens of every head raw: the cache\'s recent window (`verify --model` reads each query\'s newest N tokens from the fp16 cache; counted at 16 bits)' -r
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from build" -l protect-layers -d 'Keep these layers raw (comma-separated)' -r
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from build" -l protect-heads -d 'Keep these KV heads raw in every layer (comma-separated)' -r
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from build" -l fallback -d 'What to do with a page that cannot be encoded' -r -f -a "keep-raw\t'Store the page raw and record why'
fail\t'Fail the run'"
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from build" -l top-k -d 'k of the top-k disagreement metric' -r
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from build" -l max-key-logit-mse -d 'Budget: maximum key-logit MSE' -r
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from build" -l max-attention-tv -d 'Budget: maximum mean attention total variation' -r
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from build" -l max-topk-disagreement -d 'Budget: maximum mean top-k disagreement' -r
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from build" -l max-value-agg-mse -d 'Budget: maximum value-aggregation MSE' -r
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from build" -l max-perplexity-delta -d 'Budget: maximum perplexity increase with the encoded cache (verify --model)' -r
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from build" -l axis -d 'Axis policy: per-channel maps of keys (role-aware) or of keys and values (per-channel) are learned from --calibration' -r -f -a "raw\t'Nothing compressed'
per-token\t'Token vectors as they are'
per-channel\t'Keys and values normalized per channel (learned from calibration), coded per token'
role-aware\t'Keys per channel, values per token'"
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from build" -s o -l output -d 'Output profile' -r -F
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from build" -l isa -d 'Instruction set of the kernels (default: the best this CPU has, or QFORGE_ISA)' -r -f -a "auto\t'The QFORGE_ISA environment variable if set, else the best this CPU has'
avx512\t'AVX-512 (with VNNI where a kernel uses it and the CPU has it)'
avx2\t'AVX2 with FMA and F16C'
scalar\t'Portable code, no SIMD'"
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from build" -l threads -d 'Worker threads (default: all cores). The profile does not depend on it' -r
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from build" -l pre-rope -d 'Keys were captured before RoPE (default: after, as a KV cache holds them)'
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from build" -l unbiased-norm -d 'Store each row\'s norm divided by its cosine with its codewords, so that dot products with decoded rows are not shrunk (docs/kv-profile.md §1)'
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from build" -l channel-basis -d 'Learn each channel map in its own basis: keys weighted by the calibration queries\' second moment, values by the identity (docs/kv-profile.md §5a)'
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from build" -l json -d 'Print a JSON summary on stdout (schema qforge.kv-build/1, see docs/kv-profile.md)'
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from build" -s v -l verbose -d 'More log output on stderr: -v the plan (info), -vv per-tensor timing (debug), -vvv trace; RUST_LOG overrides'
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from build" -s q -l quiet -d 'No progress bar and no text report (JSON with --json and errors still print)'
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from build" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from build" -s V -l version -d 'Print version'
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from verify" -l eval -d 'Evaluation KV (safetensors); deterministic synthetic KV of the profile\'s shape when absent' -r -F
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from verify" -l model -d 'Run this model (Hugging Face folder or GGUF) on --text: attention metrics on its KV, and perplexity with the fp16 cache against the encoded cache' -r -F
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from verify" -l tokenizer -d 'tokenizer.json of --model (default: beside it)' -r -F
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from verify" -l text -d 'Evaluation text for --model' -r -F
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from verify" -l tokens -d 'Tokens of --text to run' -r
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from verify" -l model-queries -d 'Queries per head (last positions) for the attention metrics of --model' -r
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from verify" -l chunks -d 'Perplexity over this many consecutive chunks of --tokens tokens of --text, as llama-perplexity --chunks scores them (the attention metrics use the first chunk)' -r
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from verify" -l queries -d 'Queries (safetensors, layer.{i}.query, [query_heads, n, head_dim]); required with --eval' -r -F
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from verify" -s o -l output -d 'Receipt output' -r -F
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from verify" -l isa -d 'Instruction set of the kernels (default: the best this CPU has, or QFORGE_ISA)' -r -f -a "auto\t'The QFORGE_ISA environment variable if set, else the best this CPU has'
avx512\t'AVX-512 (with VNNI where a kernel uses it and the CPU has it)'
avx2\t'AVX2 with FMA and F16C'
scalar\t'Portable code, no SIMD'"
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from verify" -l threads -d 'Worker threads (default: all cores). The receipt does not depend on it' -r
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from verify" -l compare -d 'Also measure the baselines next to the (first) profile: TurboQuant-style, KIVI (group 32, and the group size nearest the profile\'s bits from above), q8_0, q4_0'
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from verify" -l json -d 'Print the receipt JSON on stdout (schema qforge.kv-receipt/1, see docs/kv-profile.md)'
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from verify" -s v -l verbose -d 'More log output on stderr: -v the plan (info), -vv per-tensor timing (debug), -vvv trace; RUST_LOG overrides'
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from verify" -s q -l quiet -d 'No progress bar and no text report (JSON with --json and errors still print)'
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from verify" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from verify" -s V -l version -d 'Print version'
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from capture" -l model -d 'Hugging Face folder (config.json + safetensors) or GGUF file (llama, mistral, qwen2)' -r -F
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from capture" -l tokenizer -d 'tokenizer.json (default: beside the model)' -r -F
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from capture" -l text -d 'Text file to run' -r -F
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from capture" -l tokens -d 'Tokens of the text to run (its first N)' -r
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from capture" -l queries -d 'Queries kept per head (the last positions)' -r
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from capture" -s o -l output -d 'Output KV file (layer.{i}.key / value / query)' -r -F
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from capture" -l threads -d 'Worker threads (default: all cores)' -r
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from capture" -l json -d 'Print a JSON summary on stdout (schema qforge.kv-capture/1, see docs/kv-profile.md)'
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from capture" -s v -l verbose -d 'More log output on stderr: -v the plan (info), -vv per-tensor timing (debug), -vvv trace; RUST_LOG overrides'
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from capture" -s q -l quiet -d 'No progress bar and no text report (JSON with --json and errors still print)'
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from capture" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from capture" -s V -l version -d 'Print version'
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from help" -f -a "build" -d 'Build a KV-cache compression profile (JSON)'
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from help" -f -a "verify" -d 'Verify a profile on evaluation KV and write a receipt (exit 3 when over budget)'
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from help" -f -a "capture" -d 'Run a model on a text and write its post-RoPE keys, values and queries (safetensors)'
complete -c qforge -n "__fish_qforge_using_subcommand kv-profile; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c qforge -n "__fish_qforge_using_subcommand bench-gemm" -l type -d 'Weight type' -r -f -a "q4_k\t'ggml Q4_K: 256-value super-blocks, 6-bit scales and mins, 4.5 bits per weight'
q6_k\t'ggml Q6_K: 256-value super-blocks, 8-bit scales per 16 values, 6.5625 bits'
q8_0\t'ggml Q8_0: 32-value blocks, f16 scale, 8.5 bits'
q4_0\t'ggml Q4_0: 32-value blocks, f16 scale, 4.5 bits'
nf4\t'bitsandbytes NF4 with an f32 absmax per block (64 by default), 4.5 bits at 64'
q5_k\t'ggml Q5_K: Q4_K with a fifth bit per value, 5.5 bits per weight'
iq4_xs\t'ggml IQ4_XS: 256-value super-blocks of 32-value groups with 6-bit scales, 4-bit indices into a 16-entry non-linear table, 4.25 bits per weight'"
complete -c qforge -n "__fish_qforge_using_subcommand bench-gemm" -l m -d 'Token counts (m), comma-separated' -r
complete -c qforge -n "__fish_qforge_using_subcommand bench-gemm" -l k -d 'Inner dimension' -r
complete -c qforge -n "__fish_qforge_using_subcommand bench-gemm" -l n -d 'Output rows' -r
complete -c qforge -n "__fish_qforge_using_subcommand bench-gemm" -l threads -d 'Worker threads (default: all cores)' -r
complete -c qforge -n "__fish_qforge_using_subcommand bench-gemm" -l weights -d 'Take the weights from this model file instead of random ones' -r -F
complete -c qforge -n "__fish_qforge_using_subcommand bench-gemm" -l tensor -d 'Tensor name within --weights' -r
complete -c qforge -n "__fish_qforge_using_subcommand bench-gemm" -l reps -d 'Repetitions per measurement (the median is reported)' -r
complete -c qforge -n "__fish_qforge_using_subcommand bench-gemm" -l backends -d 'Strategies to run, comma-separated' -r -f -a "fused\t'qforge\'s fused dequant-dot kernels'
lazy-dequant\t'Dequantize a tile of rows at a time, then f32 GEMM'
eager-dequant\t'Dequantize the whole matrix once, then f32 GEMM'
candle\t'candle\'s CPU QMatMul'
llamacpp\t'llama.cpp\'s ggml CPU matmul (repacked and plain buffers), through tools/ggml-peer'"
complete -c qforge -n "__fish_qforge_using_subcommand bench-gemm" -l llamacpp-peer -d 'The llama.cpp peer program (tools/ggml-peer/make.sh builds it) for the llamacpp strategy; without it QFORGE_GGML_PEER, else the peer is reported as skipped' -r -F
complete -c qforge -n "__fish_qforge_using_subcommand bench-gemm" -l isa -d 'Instruction set of the kernels (default: the best this CPU has, or QFORGE_ISA; fused: avx512 runs VNNI where the CPU has it)' -r -f -a "auto\t'The QFORGE_ISA environment variable if set, else the best this CPU has'
avx512\t'AVX-512 (with VNNI where a kernel uses it and the CPU has it)'
avx2\t'AVX2 with FMA and F16C'
scalar\t'Portable code, no SIMD'"
complete -c qforge -n "__fish_qforge_using_subcommand bench-gemm" -l device -d 'Where to run: cpu (the --backends strategies) or cuda (qforge\'s CUDA kernels on GPU 0; needs an NVIDIA driver, and no CUDA toolkit)' -r -f -a "cpu\t'The CPU strategies of `--backends`'
cuda\t'qforge\'s CUDA kernels on GPU 0 ([`cuda`])'"
complete -c qforge -n "__fish_qforge_using_subcommand bench-gemm" -l json -d 'Print one JSON document on stdout (schema qforge.bench-gemm/2, see docs/bench-gemm-json.md)'
complete -c qforge -n "__fish_qforge_using_subcommand bench-gemm" -s v -l verbose -d 'More log output on stderr: -v the plan (info), -vv per-tensor timing (debug), -vvv trace; RUST_LOG overrides'
complete -c qforge -n "__fish_qforge_using_subcommand bench-gemm" -s q -l quiet -d 'No progress bar and no text report (JSON with --json and errors still print)'
complete -c qforge -n "__fish_qforge_using_subcommand bench-gemm" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c qforge -n "__fish_qforge_using_subcommand bench-gemm" -s V -l version -d 'Print version'
complete -c qforge -n "__fish_qforge_using_subcommand help; and not __fish_seen_subcommand_from quantize export-native inspect kv-profile bench-gemm help" -f -a "quantize" -d 'Quantize a safetensors or GGUF model to GGUF (llama.cpp types and mixes)'
complete -c qforge -n "__fish_qforge_using_subcommand help; and not __fish_seen_subcommand_from quantize export-native inspect kv-profile bench-gemm help" -f -a "export-native" -d 'Write the native QNAT format (NF4/FP4 with double quantization, k-quants, floats)'
complete -c qforge -n "__fish_qforge_using_subcommand help; and not __fish_seen_subcommand_from quantize export-native inspect kv-profile bench-gemm help" -f -a "inspect" -d 'Show format, metadata and tensors of a safetensors, GGUF or QNAT file'
complete -c qforge -n "__fish_qforge_using_subcommand help; and not __fish_seen_subcommand_from quantize export-native inspect kv-profile bench-gemm help" -f -a "kv-profile" -d 'Build or verify KV-cache compression profiles'
complete -c qforge -n "__fish_qforge_using_subcommand help; and not __fish_seen_subcommand_from quantize export-native inspect kv-profile bench-gemm help" -f -a "bench-gemm" -d 'Benchmark dequant-GEMM/GEMV kernels against a roofline and candle'
complete -c qforge -n "__fish_qforge_using_subcommand help; and not __fish_seen_subcommand_from quantize export-native inspect kv-profile bench-gemm help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c qforge -n "__fish_qforge_using_subcommand help; and __fish_seen_subcommand_from kv-profile" -f -a "build" -d 'Build a KV-cache compression profile (JSON)'
complete -c qforge -n "__fish_qforge_using_subcommand help; and __fish_seen_subcommand_from kv-profile" -f -a "verify" -d 'Verify a profile on evaluation KV and write a receipt (exit 3 when over budget)'
complete -c qforge -n "__fish_qforge_using_subcommand help; and __fish_seen_subcommand_from kv-profile" -f -a "capture" -d 'Run a model on a text and write its post-RoPE keys, values and queries (safetensors)'
