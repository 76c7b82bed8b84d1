// Validates EPCIS documents with epcis2.js (GS1-conformant JSON Schema + its own checks, such as
// extension prefixes declared in @context). Usage: node validate.cjs FILE...
// Prints one JSON line per file: {"file", "success", "errors"}; exits 1 if any is invalid.
"use strict";
const fs = require("fs");
const { validateEpcisDocument } = require("epcis2.js");

let failed = false;
for (const file of process.argv.slice(2)) {
  const document = JSON.parse(fs.readFileSync(file, "utf8"));
  let result;
  try {
    result = validateEpcisDocument(document, false);
  } catch (error) {
    result = { success: false, errors: [String(error)] };
  }
  failed = failed || !result.success;
  console.log(JSON.stringify({ file, success: result.success, errors: result.errors || [] }));
}
process.exit(failed ? 1 : 0);
