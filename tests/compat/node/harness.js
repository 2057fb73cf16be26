// Starts the real memoctopus binary in front of the project's mock upstream.
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import path from "node:path";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
const release = path.join(root, "target", "release");
export const SERVER_KEY = "sk-compat-server-key-000111";
export const CLIENT_KEY = "ck-compat-client-key-222333";
// COMPAT_UPSTREAM=tls: the mock's TLS port (h2 and http/1.1 by ALPN, a test CA trusted through
// PROXY_UPSTREAM_CA), the path users take to api.openai.com.
const TLS = process.env.COMPAT_UPSTREAM === "tls";
const CA = path.join(process.env.TMPDIR || "/tmp", `memoctopus-compat-ca-${process.pid}.pem`);

function start(cmd, args, env, ready) {
  return new Promise((resolve, reject) => {
    const proc = spawn(cmd, args, { env, stdio: ["ignore", "pipe", "inherit"] });
    const timer = setTimeout(() => reject(new Error(`${cmd} did not start`)), 20000);
    createInterface({ input: proc.stdout }).on("line", (line) => {
      const found = ready(line);
      if (found) {
        clearTimeout(timer);
        resolve({ proc, addr: found });
      }
    });
    proc.on("exit", (code) => reject(new Error(`${cmd} exited with ${code}`)));
  });
}

export function startMock() {
  const args = TLS ? ["127.0.0.1:0", "--tls", "127.0.0.1:0", CA] : ["127.0.0.1:0"];
  return start(path.join(release, "examples", "mock-upstream"), args, process.env, (line) =>
    line.includes("listening on ") && TLS === line.trim().endsWith("(TLS)")
      ? line.split("listening on ")[1].trim().split(" ")[0]
      : null,
  );
}

export function startProxy(mockAddr, extra = {}) {
  const env = {
    PATH: process.env.PATH,
    OPENAI_API_KEY: SERVER_KEY,
    OPENAI_BASE_URL: TLS ? `https://localhost:${mockAddr.split(":").pop()}/v1` : `http://${mockAddr}/v1`,
    ...(TLS ? { PROXY_UPSTREAM_CA: CA } : {}),
    HOST: "127.0.0.1",
    PORT: "0",
    PROXY_LOG_FORMAT: "json",
    PROXY_UPSTREAM_PROTOCOL: process.env.COMPAT_PROTOCOL || "auto",
    ...extra,
  };
  return start(path.join(release, "memoctopus"), [], env, (line) => {
    try {
      const event = JSON.parse(line);
      return event.message === "memoctopus listening" ? event.address : null;
    } catch {
      return null;
    }
  });
}
