// Schema validation of rendered Kubernetes manifests with kubernetes-models
// (+ @kubernetes-models/prometheus-operator): wrong types, bad enums, missing
// required fields, bad quantities. Unknown fields are checked separately
// (unknown_fields.py). Usage: node validate_manifests.mjs FILE.yaml...
// Kinds of other operators (CloudNativePG) are listed as skipped.
// Exits 1 with one line per problem.
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";

const modulesDir = process.env.COOKIEFS_NPM_DIR;
const load = (spec) => import(path.join(modulesDir, "node_modules", spec));
const yaml = (await load("js-yaml/dist/js-yaml.mjs")).default;

const modulePath = {
  "monitoring.coreos.com/v1": "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/index.js",
};
async function modelFor(apiVersion, kind) {
  let spec = modulePath[apiVersion];
  if (!spec) {
    const groupVersion = apiVersion.includes("/") ? apiVersion : `v1`;
    spec = `kubernetes-models/${groupVersion}/index.js`;
  }
  if (!fs.existsSync(path.join(modulesDir, "node_modules", spec))) return null;
  const mod = await load(spec);
  return mod[kind] ?? null;
}

let problems = 0, checked = 0;
const skipped = new Set();
for (const file of process.argv.slice(2)) {
  const docs = yaml.loadAll(fs.readFileSync(file, "utf8")).filter((d) => d);
  for (const doc of docs) {
    const where = `${path.basename(file)}: ${doc.kind}/${doc.metadata?.name}`;
    if (!doc.apiVersion || !doc.kind || !doc.metadata?.name) {
      console.error(`FAIL: ${where}: apiVersion, kind and metadata.name are required`);
      problems++;
      continue;
    }
    const Model = await modelFor(doc.apiVersion, doc.kind);
    if (!Model) { skipped.add(`${doc.apiVersion} ${doc.kind}`); continue; }
    try {
      new Model(doc).validate();
      checked++;
    } catch (e) {
      console.error(`FAIL: ${where}: ${e.message.split("\n").slice(0, 6).join(" | ")}`);
      problems++;
    }
  }
}
console.log(`${checked} objects valid` + (skipped.size ? `; no schema (not checked): ${[...skipped].join(", ")}` : ""));
process.exit(problems ? 1 : 0);
