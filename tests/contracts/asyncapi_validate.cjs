#!/usr/bin/env node
// Validate an AsyncAPI document with the official parser (@asyncapi/parser).
//
//   node tests/contracts/asyncapi_validate.cjs [FILE]      (stdin when FILE is absent or "-")
//
// Prints every diagnostic as one JSON line on stderr ({severity, code, message, path}).
// Exit 0: no error (warnings allowed); 1: the parser reported an error; 2: the parser
// is not installed. It is loaded from ASYNCAPI_NODE_PREFIX, default .cache/asyncapi-node
// in the repository root, where .ci/run installs it:
//   npm install --prefix .cache/asyncapi-node --ignore-scripts @asyncapi/parser@<pinned>
"use strict";

const fs = require("node:fs");
const path = require("node:path");
const { createRequire } = require("node:module");

const SEVERITY = ["error", "warning", "info", "hint"];
const root = path.resolve(__dirname, "..", "..");
const prefix = path.resolve(process.env.ASYNCAPI_NODE_PREFIX || path.join(root, ".cache", "asyncapi-node"));

let Parser;
try {
  ({ Parser } = createRequire(path.join(prefix, "package.json"))("@asyncapi/parser"));
} catch (err) {
  process.stderr.write(
    `@asyncapi/parser is not installed under ${prefix} (${err.code || err.message}); ` +
      "run the install step of .ci/run\n",
  );
  process.exit(2);
}

async function main() {
  const file = process.argv[2];
  const text = !file || file === "-" ? fs.readFileSync(0, "utf8") : fs.readFileSync(file, "utf8");
  const { document, diagnostics } = await new Parser().parse(text);
  let errors = 0;
  for (const d of diagnostics) {
    if (d.severity === 0) errors += 1;
    const line = {
      severity: SEVERITY[d.severity] || String(d.severity),
      code: d.code,
      message: d.message,
      path: (d.path || []).join("/"),
    };
    process.stderr.write(JSON.stringify(line) + "\n");
  }
  process.exit(errors || !document ? 1 : 0);
}

main().catch((err) => {
  process.stderr.write(`${err.stack || err}\n`);
  process.exit(1);
});
