#!/usr/bin/env node
// Command line for the agentkit JavaScript runtime.
//
//   node act.mjs POLICY.onnx                 print the policy's metadata
//   node act.mjs POLICY.onnx '[0.1, 0.2, ...]'   act on one observation (JSON), deterministic
//   node act.mjs --jobs JOBS.json            run a list of jobs, print their outputs as JSON (used by tests):
//       [{"model": "p.onnx", "obs": [[...]], "mask": [[...]]?, "noise": [[...]]?, "agent": [...]?,
//         "deterministic": true}]  ->  [{"action": [...]} | {"error": "..."}]
import { readFile } from "node:fs/promises";
import { loadPolicy } from "./agentkit-runtime.mjs";

// Resolves once the text has left this process: process.exit() right after console.log cuts output to a pipe
// at 64 KiB (the pipe's buffer), and the --jobs results are larger.
function print(text) {
  return new Promise((resolve) => process.stdout.write(`${text}\n`, resolve));
}

async function main(argv) {
  if (argv.length === 0 || argv[0] === "--help" || argv[0] === "-h") {
    await print("usage: node act.mjs POLICY.onnx [OBS_JSON] | node act.mjs --jobs JOBS.json");
    return argv.length === 0 ? 2 : 0;
  }
  if (argv[0] === "--jobs") {
    const jobs = JSON.parse(await readFile(argv[1], "utf8"));
    const cache = new Map();
    const results = [];
    for (const job of jobs) {
      try {
        if (!cache.has(job.model)) cache.set(job.model, await loadPolicy(job.model));
        const policy = cache.get(job.model);
        const out = await policy.act(job.obs, {
          mask: job.mask, noise: job.noise, agent: job.agent, deterministic: job.deterministic ?? true,
        });
        results.push(job.metadata ? { ...out, metadata: policy.metadata } : out);
      } catch (err) {
        results.push({ error: String(err.message ?? err) });
      }
    }
    await print(JSON.stringify(results));
    return 0;
  }
  const policy = await loadPolicy(argv[0]);
  if (argv.length === 1) {
    await print(JSON.stringify(policy.metadata, null, 2));
    return 0;
  }
  await print(JSON.stringify(await policy.act(JSON.parse(argv[1]))));
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => { console.error(`error: ${err.message ?? err}`); process.exit(1); },
);
