// The official openai npm package, pointed at memoctopus by baseURL, as a user would.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import OpenAI from "openai";
import { startMock, startProxy, CLIENT_KEY, SERVER_KEY } from "./harness.js";

let mock, proxy, keyed;
const messages = [
  { role: "developer", content: "You are a helpful assistant." },
  { role: "user", content: "Hello!" },
];
const client = (baseURL, opts = {}) => new OpenAI({ baseURL, apiKey: "client-side-placeholder", maxRetries: 0, ...opts });
const url = (p) => `http://${p.addr}/v1`;

before(async () => {
  mock = await startMock();
  proxy = await startProxy(mock.addr);
  keyed = await startProxy(mock.addr, { PROXY_CLIENT_KEYS: CLIENT_KEY });
});

after(() => {
  for (const p of [proxy, keyed, mock]) p?.proc.kill();
});

function audioFile(size) {
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "memoctopus-")), "speech.mp3");
  fs.writeFileSync(file, Buffer.alloc(size, 7));
  return file;
}

test("chat completion", async () => {
  const completion = await client(url(proxy)).chat.completions.create({ model: "gpt-4", messages });
  assert.equal(completion.id, "chatcmpl-123");
  assert.equal(completion.choices[0].message.content, "Hello! How can I help you today?");
});

test("streamed chat arrives incrementally", async () => {
  const c = client(url(proxy), { defaultHeaders: { "x-mock-events": "10", "x-mock-interval-ms": "100" } });
  const started = performance.now();
  const arrivals = [];
  let text = "";
  const stream = await c.chat.completions.create({ model: "gpt-4", messages, stream: true });
  for await (const chunk of stream) {
    arrivals.push(performance.now() - started);
    text += chunk.choices[0]?.delta?.content ?? "";
  }
  assert.ok(text.startsWith("Hello! How can I help you today?"), text);
  assert.equal(arrivals.length, 10);
  assert.ok(arrivals[0] < arrivals[arrivals.length - 1] - 600, JSON.stringify(arrivals));
});

test("transcription with a real file", async () => {
  const result = await client(url(proxy)).audio.transcriptions.create({
    model: "gpt-4o-transcribe",
    file: fs.createReadStream(audioFile(100_000)),
  });
  assert.ok(result.text.startsWith("Imagine the wildest idea"));
});

test("streamed transcription", async () => {
  const stream = await client(url(proxy)).audio.transcriptions.create({
    model: "gpt-4o-mini-transcribe",
    file: fs.createReadStream(audioFile(10_000)),
    stream: true,
  });
  const types = [];
  for await (const event of stream) types.push(event.type);
  assert.equal(types.at(-1), "transcript.text.done");
  assert.ok(types.slice(0, -1).every((t) => t === "transcript.text.delta"), types.join());
});

test("upstream 429 is a RateLimitError", async () => {
  await assert.rejects(
    client(url(proxy)).chat.completions.create({ model: "gpt-4", messages }, { headers: { "x-mock-status": "429" } }),
    (err) => err instanceof OpenAI.RateLimitError && err.status === 429,
  );
});

test("unknown route is a NotFoundError", async () => {
  await assert.rejects(
    client(url(proxy)).embeddings.create({ model: "text-embedding-3-small", input: "hi" }),
    (err) => err instanceof OpenAI.NotFoundError && /Invalid URL \(POST \/v1\/embeddings\)/.test(err.message),
  );
});

test("missing client key is an AuthenticationError", async () => {
  await assert.rejects(
    client(url(keyed)).chat.completions.create({ model: "gpt-4", messages }),
    (err) => err instanceof OpenAI.AuthenticationError && err.code === "invalid_api_key",
  );
  const ok = new OpenAI({ baseURL: url(keyed), apiKey: CLIENT_KEY, maxRetries: 0 });
  assert.equal((await ok.chat.completions.create({ model: "gpt-4", messages })).id, "chatcmpl-123");
});

test("raw response headers come through", async () => {
  const { data, response } = await client(url(proxy))
    .chat.completions.create({ model: "gpt-4", messages }, { headers: { "X-Client-Request-Id": "compat-node-1" } })
    .withResponse();
  assert.equal(response.headers.get("x-request-id"), "req_mock_0123456789abcdef");
  assert.equal(response.headers.get("x-client-request-id"), "compat-node-1");
  assert.equal(data.choices[0].message.content, "Hello! How can I help you today?");
});

// The npm package's OpenAIRealtimeWS always connects with wss://, whatever baseURL's scheme:
// Node apps need the proxy on HTTPS (PROXY_TLS_CERT and PROXY_TLS_KEY, or an ingress in front).
// A self-signed certificate for localhost, made with openssl, stands in for the operator's.
function selfSignedLocalhost() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "memoctopus-tls-"));
  const cert = path.join(dir, "cert.pem");
  const key = path.join(dir, "key.pem");
  execFileSync("openssl", [
    "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
    "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=localhost",
    "-addext", "subjectAltName=DNS:localhost",
  ], { stdio: "ignore" });
  return { cert, key };
}

test("realtime WebSocket through the proxy (OpenAIRealtimeWS, wss)", async () => {
  const { OpenAIRealtimeWS } = await import("openai/realtime/ws");
  const { cert, key } = selfSignedLocalhost();
  const voice = await startProxy(mock.addr, {
    PROXY_EXTRA_ROUTES: "GET /v1/realtime",
    PROXY_CLIENT_KEYS: `voice-app:${CLIENT_KEY}`,
    PROXY_TLS_CERT: cert,
    PROXY_TLS_KEY: key,
  });
  try {
    const port = voice.addr.split(":").pop();
    const c = new OpenAI({ baseURL: `https://localhost:${port}/v1`, apiKey: CLIENT_KEY, maxRetries: 0 });
    const rt = await OpenAIRealtimeWS.create(c, { model: "gpt-realtime", options: { ca: fs.readFileSync(cert) } });
    const created = await new Promise((resolve, reject) => {
      rt.on("session.created", resolve);
      rt.on("error", reject);
    });
    // What the upstream saw: the server's key, never the client's.
    assert.equal(created.mock.authorization, `Bearer ${SERVER_KEY}`);
    assert.equal(created.mock.target, "/v1/realtime?model=gpt-realtime");
    const updated = new Promise((resolve) => rt.on("session.updated", resolve));
    rt.send({ type: "session.update", session: { type: "realtime", output_modalities: ["text"] } });
    assert.deepEqual((await updated).session.output_modalities, ["text"]);
    rt.close();
  } finally {
    voice.proc.kill();
  }
});
