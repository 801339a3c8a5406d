// Load a GGUF file in the real llama.cpp (node-llama-cpp's prebuilt CPU binaries) and answer one JSON
// request read from stdin with one JSON reply on stdout. Used by lmtune's tests and benchmarks to check
// that what lmtune exports runs in the engine people run it in; llamacpp.py is the Python side.
//
// Request:  {"model": path, "lora": [path, ...]?, "context": n?, "threads": n?,
//            "tokenize": [{"text": s, "special": bool}]?,       -> "tokens": [[id, ...]]
//            "logprobs": [[id, ...]]?,                          -> "logprobs": [[[p0..pV-1] per position]] (natural log)
//            "greedy": [{"tokens": [id, ...], "max_tokens": n}]?, -> "greedy": [{"tokens": [...], "stopped": bool}]
//            "chat": [{"system": s|null, "user": s, "max_tokens": n}]? -> "chat": [{"text": s, "stopped": bool}]}
// Reply also holds "eog": the ids llama.cpp ends generation at, "vocab": n, "bos": id|null, "add_bos": bool.
import {getLlama, JinjaTemplateChatWrapper, LlamaChatSession, LlamaLogLevel} from "node-llama-cpp";

const request = JSON.parse(await readStdin());
// build: "never": only the prebuilt binaries, never a download or a compile (offline machines)
const llama = await getLlama({gpu: false, build: "never", logLevel: LlamaLogLevel.error});
const model = await llama.loadModel({modelPath: request.model});
const lora = (request.lora ?? []).map((filePath) => ({filePath, scale: 1}));
const context = await model.createContext({
    contextSize: request.context ?? 512,
    threads: request.threads ?? 2,
    ...(lora.length ? {lora: {adapters: lora}} : {}),
});
const sequence = context.getSequence();
const reply = {
    vocab: vocabSize(),
    bos: model.tokens.bos ?? null,
    add_bos: model.tokens.shouldPrependBosToken,
    eog: eogTokens(),
};
if (request.tokenize)
    reply.tokens = request.tokenize.map(({text, special}) => Array.from(model.tokenize(text, Boolean(special))));
if (request.logprobs) {
    reply.logprobs = [];
    for (const tokens of request.logprobs)
        reply.logprobs.push(await logprobs(tokens));
}
if (request.greedy) {
    reply.greedy = [];
    for (const {tokens, max_tokens} of request.greedy)
        reply.greedy.push(await greedy(tokens, max_tokens));
}
if (request.chat) {
    reply.chat = [];
    for (const turn of request.chat)
        reply.chat.push(await chat(turn));
}
process.stdout.write(JSON.stringify(reply));
await context.dispose();
await model.dispose();
await llama.dispose();

async function readStdin() {
    const chunks = [];
    for await (const chunk of process.stdin)
        chunks.push(chunk);
    return Buffer.concat(chunks).toString("utf8");
}

function eogTokens() {
    const ids = [];
    for (let id = 0; id < vocabSize(); id++)
        if (model.isEogToken(id))
            ids.push(id);
    return ids;
}

function vocabSize() {
    return model.fileInfo.metadata.tokenizer.ggml.tokens.length;
}

// Natural-log probabilities of every vocabulary entry after each position. With temperature 0 the sampler
// chain is greedy only, which leaves the logits as they are, so these are log-softmax(logits) over the whole
// vocabulary: comparable with transformers' logits up to a constant per position.
async function logprobs(tokens) {
    await sequence.clearHistory();
    const items = tokens.map((token) => [token, {generateNext: {probabilities: true}}]);
    const results = await sequence.controlledEvaluate(items);
    const n = vocabSize();
    return results.map((result) => {
        const row = new Array(n).fill(-Infinity);
        for (const [token, p] of result.next.probabilities)
            row[token] = Math.log(p);
        return row;
    });
}

async function greedy(tokens, maxTokens) {
    await sequence.clearHistory();
    const out = [];
    let stopped = false;
    for await (const token of sequence.evaluate(tokens, {temperature: 0, yieldEogToken: true})) {
        out.push(token);
        if (model.isEogToken(token)) {
            stopped = true;
            break;
        }
        if (out.length >= maxTokens)
            break;
    }
    return {tokens: out, stopped};
}

// A chat turn laid out by the GGUF's own chat template, rendered by llama.cpp's Jinja engine.
async function chat({system, user, max_tokens}) {
    await sequence.clearHistory();
    const template = model.fileInfo.metadata?.tokenizer?.chat_template;
    const session = new LlamaChatSession({
        contextSequence: sequence,
        chatWrapper: new JinjaTemplateChatWrapper({template, trimLeadingWhitespaceInResponses: false}),
        systemPrompt: system ?? undefined,
        autoDisposeSequence: false,
    });
    const result = await session.promptWithMeta(user, {maxTokens: max_tokens, temperature: 0});
    session.dispose({disposeSequence: false});
    return {text: result.responseText, stopped: result.stopReason === "eogToken"};
}
