#!/usr/bin/env node
// ONNX Runtime (onnxruntime-node, CPU execution provider) timed the way bench/nn_runner.cpp times
// flock, so the two are comparable: one thread (intra- and inter-op), all graph optimizations,
// the same model file and input batch; warm-up, then timed session.run calls until --min-time
// seconds and --min-iters iterations. Prints one JSON line:
//   {"iterations": K, "ns_per_batch": T, "rows_per_second": R, "ort_version": V}
// Usage: node ort_runner.js MODEL.onnx --batch N --input FILE.f32 [--min-time S] [--warmup S]
//                           [--min-iters K] [--dump-output FILE] [--modules DIR]
//        node ort_runner.js MODEL.onnx --score-file ROWS.f32 --cols C [--chunk K] [--modules DIR]
//   scores every row of a float32 row-major file once, K rows per call (default 16384), and prints
//   {"seconds": wall, "cpu_seconds": cpu, "rows": N, "positives": P, "ort_version": V}: P counts rows
//   whose label (an int64 output) is 1, or whose second score column beats the first.
// --modules: the folder holding node_modules (bench/ort/install.sh puts it in build/bench-ort).
'use strict';
const fs = require('fs');
const path = require('path');

function fail(msg) {
  process.stderr.write(`ort_runner: ${msg}\n`);
  process.exit(1);
}

function parseArgs(argv) {
  const a = {batch: 0, input: '', minTime: 0.4, warmup: 0.1, minIters: 3, dump: '', modules: '',
             scoreFile: '', cols: 0, chunk: 16384};
  const rest = [];
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const v = () => { if (i + 1 >= argv.length) fail(`${k} needs a value`); return argv[++i]; };
    if (k === '--batch') a.batch = parseInt(v(), 10);
    else if (k === '--input') a.input = v();
    else if (k === '--min-time') a.minTime = parseFloat(v());
    else if (k === '--warmup') a.warmup = parseFloat(v());
    else if (k === '--min-iters') a.minIters = parseInt(v(), 10);
    else if (k === '--dump-output') a.dump = v();
    else if (k === '--modules') a.modules = v();
    else if (k === '--score-file') a.scoreFile = v();
    else if (k === '--cols') a.cols = parseInt(v(), 10);
    else if (k === '--chunk') a.chunk = parseInt(v(), 10);
    else if (k.startsWith('--')) fail(`unknown option ${k}`);
    else rest.push(k);
  }
  if (rest.length !== 1) fail('expected one model path');
  if (a.scoreFile) {
    if (!(a.cols > 0) || !(a.chunk > 0)) fail('--score-file needs --cols and a positive --chunk');
  } else {
    if (!(a.batch > 0)) fail('--batch must be a positive integer');
    if (!a.input) fail('--input is required');
  }
  a.model = rest[0];
  return a;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const modules = args.modules || path.join(__dirname, '..', '..', 'build', 'bench-ort');
  let ort;
  try {
    ort = require(require.resolve('onnxruntime-node', {paths: [modules]}));
  } catch (e) {
    fail(`onnxruntime-node not found under ${modules} (run bench/ort/install.sh): ${e.message}`);
  }
  const session = await ort.InferenceSession.create(args.model, {
    executionProviders: ['cpu'],
    intraOpNumThreads: 1,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
  });
  if (args.scoreFile) return scoreFile(ort, session, args, modules);
  const inputName = session.inputNames[0];
  const outputName = session.outputNames[0];
  const buf = fs.readFileSync(args.input);
  const data = new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
  if (data.length % args.batch !== 0) fail(`input holds ${data.length} floats, not a multiple of batch ${args.batch}`);
  const perRow = data.length / args.batch;
  // The input's shape after the batch axis comes from the model (e.g. [N, 28] or [N, 1, 64]).
  const meta = session.inputMetadata ? session.inputMetadata[0] : null;
  let dims = [args.batch, perRow];
  if (meta && Array.isArray(meta.shape) && meta.shape.length > 2) {
    const tail = meta.shape.slice(1).map(Number);
    if (tail.every(Number.isFinite) && tail.reduce((x, y) => x * y, 1) === perRow) dims = [args.batch, ...tail];
  }
  const feeds = {[inputName]: new ort.Tensor('float32', data, dims)};

  const warmEnd = process.hrtime.bigint() + BigInt(Math.round(args.warmup * 1e9));
  let out;
  do {
    out = await session.run(feeds);
  } while (process.hrtime.bigint() < warmEnd);
  if (args.dump) {
    const y = out[outputName].data;
    fs.writeFileSync(args.dump, Buffer.from(new Float32Array(y).buffer));
  }

  let total = 0n;
  let iters = 0;
  const minNs = BigInt(Math.round(args.minTime * 1e9));
  while (total < minNs || iters < args.minIters) {
    const t0 = process.hrtime.bigint();
    out = await session.run(feeds);
    total += process.hrtime.bigint() - t0;
    iters++;
  }
  const ns = Number(total) / iters;
  const version = require(require.resolve('onnxruntime-node/package.json', {paths: [modules]})).version;
  process.stdout.write(JSON.stringify({iterations: iters, ns_per_batch: ns,
                                       rows_per_second: args.batch * 1e9 / ns, ort_version: version}) + '\n');
}

// Every row once, in chunks; positives as the benchmark's other contenders count them.
async function scoreFile(ort, session, args, modules) {
  const buf = fs.readFileSync(args.scoreFile);
  const all = new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
  if (all.length % args.cols !== 0) fail(`${args.scoreFile} does not hold rows of ${args.cols} floats`);
  const rows = all.length / args.cols;
  const inputName = session.inputNames[0];
  const t0 = process.hrtime.bigint();
  const c0 = process.cpuUsage();
  let positives = 0;
  for (let lo = 0; lo < rows; lo += args.chunk) {
    const n = Math.min(args.chunk, rows - lo);
    const x = all.subarray(lo * args.cols, (lo + n) * args.cols);
    const out = await session.run({[inputName]: new ort.Tensor('float32', x, [n, args.cols])});
    const first = out[session.outputNames[0]];
    if (first.type === 'int64') {
      for (let i = 0; i < n; i++) if (first.data[i] === 1n) positives++;
    } else {
      const y = first.data;
      const width = y.length / n;
      for (let i = 0; i < n; i++) if (width >= 2 && y[i * width + 1] > y[i * width]) positives++;
    }
  }
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = process.cpuUsage(c0);
  const version = require(require.resolve('onnxruntime-node/package.json', {paths: [modules]})).version;
  process.stdout.write(JSON.stringify({seconds: wall, cpu_seconds: (cpu.user + cpu.system) / 1e6, rows,
                                       positives, ort_version: version}) + '\n');
}

main().catch((e) => fail(e && e.message ? e.message : String(e)));
