// llama.cpp itself (the prebuilt binding node-llama-cpp, no compile) reads a GGUF and answers, for
// webtune's export check (src/webtune/deploy/llamacpp.py calls it):
//   stdin  {"model": "x.gguf", "prompts": [[ids]], "reference": [[ids]], "texts": ["..."], "threads": 1}
//   stdout {"predicted": [[ids]], "tokenized": [[ids]], "llama_cpp": "<build>"}
// For each prompt, llama.cpp's greedy next token at each step while the reference's tokens are fed
// (teacher forcing: predicted[i][k] is llama.cpp's argmax after prompt + reference[:k]), so one early
// difference does not hide how the rest agree; identical free-running greedy output is
// predicted == reference. `texts` are tokenized by llama.cpp's own tokenizer (special tokens parsed).
import { getLlama, LlamaLogLevel } from "node-llama-cpp";

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const job = JSON.parse(Buffer.concat(chunks).toString("utf8"));

const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error });
const model = await llama.loadModel({ modelPath: job.model });
const longest = Math.max(...job.prompts.map((p, i) => p.length + job.reference[i].length), 8);
const context = await model.createContext({ contextSize: longest + 8, sequences: 1,
                                            threads: job.threads || 1 });
const predicted = [];
for (let i = 0; i < job.prompts.length; i++) {
  const sequence = context.getSequence();
  const want = job.reference[i];
  const got = [];
  if (want.length) {
    const steps = sequence.evaluate(job.prompts[i], { temperature: 0 });
    let step = await steps.next();
    while (!step.done && got.length < want.length) {
      got.push(step.value);
      if (got.length === want.length) break;
      step = await steps.next(want[got.length - 1]);  // feed the reference's token, not ours
    }
    await steps.return();
  }
  predicted.push(got);
  sequence.dispose();
}
const tokenized = (job.texts || []).map((t) => Array.from(model.tokenize(t, true)));
process.stdout.write(JSON.stringify({ predicted, tokenized, llama_cpp: llama.buildType + " " + (llama.llamaCppRelease?.release ?? "") }) + "\n");
await context.dispose();
await model.dispose();
await llama.dispose();
