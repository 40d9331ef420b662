// Compile contracts/src/*.sol with the pinned solc from npm and write contracts/artifacts/.
// `--check` recompiles and exits 1 when the committed artifacts differ (CI runs it).
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const solc = require("solc");
const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "..");
const srcDir = path.join(here, "src");
const outDir = path.join(here, "artifacts");
const check = process.argv.includes("--check");

// Settings recorded with every artifact. `paris` has no PUSH0/MCOPY: FISCO BCOS gained Cancun
// opcodes only in 3.10, and older permissioned chains lag further.
const settings = {
  evmVersion: "paris",
  optimizer: { enabled: true, runs: 200 },
  viaIR: false,
  outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
};

const sources = {};
for (const f of fs.readdirSync(srcDir).filter((n) => n.endsWith(".sol")).sort()) {
  sources[`src/${f}`] = { content: fs.readFileSync(path.join(srcDir, f), "utf8") };
}

function findImports(p) {
  const candidates = [path.join(root, "node_modules", p), path.join(here, p)];
  for (const c of candidates) {
    if (fs.existsSync(c)) return { contents: fs.readFileSync(c, "utf8") };
  }
  return { error: `import not found: ${p}` };
}

const out = JSON.parse(
  solc.compile(JSON.stringify({ language: "Solidity", sources, settings }), { import: findImports }),
);
const errors = (out.errors || []).filter((e) => e.severity === "error");
for (const e of out.errors || []) console.error(e.formattedMessage);
if (errors.length) process.exit(2);

// EIP-170: deployed code above 24,576 bytes cannot be deployed on Ethereum-rules chains.
const MAX_CODE = 24576;
let differ = 0;
const written = new Set();
fs.mkdirSync(outDir, { recursive: true });
for (const [file, contracts] of Object.entries(out.contracts)) {
  if (!file.startsWith("src/")) continue;
  for (const [name, c] of Object.entries(contracts)) {
    if (!c.evm.bytecode.object) continue; // abstract contracts and interfaces
    const size = c.evm.deployedBytecode.object.length / 2;
    if (size > MAX_CODE) {
      console.error(`${name}: deployed code is ${size} bytes, over the EIP-170 limit of ${MAX_CODE}`);
      process.exit(2);
    }
    written.add(`${name}.json`);
    const artifact = {
      contractName: name,
      sourceName: file,
      compiler: { name: "solc", version: solc.version() },
      settings: { evmVersion: settings.evmVersion, optimizer: settings.optimizer, viaIR: settings.viaIR },
      abi: c.abi,
      bytecode: "0x" + c.evm.bytecode.object,
      deployedBytecode: "0x" + c.evm.deployedBytecode.object,
    };
    const text = JSON.stringify(artifact, null, 2) + "\n";
    const target = path.join(outDir, `${name}.json`);
    if (check) {
      const old = fs.existsSync(target) ? fs.readFileSync(target, "utf8") : "";
      if (old !== text) {
        console.error(`contracts/artifacts/${name}.json differs from a fresh compile of ${file}`);
        differ = 1;
      }
    } else {
      fs.writeFileSync(target, text);
      console.log(`wrote contracts/artifacts/${name}.json (${size} bytes deployed)`);
    }
  }
}
for (const f of fs.readdirSync(outDir).filter((n) => n.endsWith(".json")).sort()) {
  if (written.has(f)) continue;
  if (check) {
    console.error(`contracts/artifacts/${f} has no contract in contracts/src`);
    differ = 1;
  } else {
    fs.unlinkSync(path.join(outDir, f));
    console.log(`removed stale contracts/artifacts/${f}`);
  }
}
if (check && !differ) console.log("contract artifacts match a fresh compile");
process.exit(differ);
