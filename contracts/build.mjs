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

let differ = 0;
fs.mkdirSync(outDir, { recursive: true });
for (const [file, contracts] of Object.entries(out.contracts)) {
  if (!file.startsWith("src/")) continue;
  for (const [name, c] of Object.entries(contracts)) {
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
      console.log(`wrote contracts/artifacts/${name}.json`);
    }
  }
}
if (check && !differ) console.log("contract artifacts match a fresh compile");
process.exit(differ);
