// Parses queries with the lezer grammars Grafana's query editors use (Prometheus's own
// lezer-promql, Grafana's lezer-logql and lezer-traceql) and reports the ones they reject.
//
//   stdin:  [{"lang": "promql"|"logql"|"traceql", "expr": "...", "source": "..."}]
//   stdout: [{"source", "lang", "expr", "error"}] for each query that fails
//   exit:   0 none fail, 1 some fail, 2 bad input
//
// lezer never throws on bad syntax: it recovers and marks the spot with an error node (⚠), so a
// query fails when its tree holds one, or holds nothing at all (an empty query parses "fine").
// Variables must already be substituted (tests/bundle/conftest.py does it with Query.concrete()).
// Versions are pinned exactly in package.json; `npm ci` installs them from package-lock.json.

import { parser as logqlParser } from "@grafana/lezer-logql";
import { parser as traceqlParser } from "@grafana/lezer-traceql";
import { parser as promqlParser } from "@prometheus-io/lezer-promql";

// The grammars declare no dialects. lezer-promql has two top rules (PromQL and MetricName, the
// latter for codemirror-promql's metric-name field), so the top is named, as codemirror-promql
// does; Grafana's editors call parser.parse() with the same default tops.
const PARSERS = {
  promql: promqlParser.configure({ top: "PromQL" }),
  logql: logqlParser.configure({ top: "LogQL" }),
  traceql: traceqlParser.configure({ top: "TraceQL" }),
};

const CONTEXT = 20; // characters shown either side of an error

function where(expr, pos) {
  const before = expr.slice(0, pos);
  const line = before.split("\n").length;
  const col = pos - before.lastIndexOf("\n");
  const start = Math.max(0, pos - CONTEXT);
  const end = Math.min(expr.length, pos + CONTEXT);
  const around =
    (start > 0 ? "…" : "") +
    expr.slice(start, pos) + "⚠" + expr.slice(pos, end) +
    (end < expr.length ? "…" : "");
  return `at ${line}:${col} (offset ${pos}): ${JSON.stringify(around)}`;
}

/** The error message for `expr`, or null when the grammar accepts it. */
function check(lang, expr) {
  const tree = PARSERS[lang].parse(expr);
  let error = null;
  let content = false;
  tree.iterate({
    enter(node) {
      if (error) return false;
      if (node.type.isError) {
        const text = expr.slice(node.from, node.to);
        error = `syntax error ${where(expr, node.from)}` +
          (text ? `, unexpected ${JSON.stringify(text)}`
            : node.from >= expr.trimEnd().length ? ", unexpected end of query" : "");
        return false;
      }
      if (!node.type.isTop && !node.type.isSkipped) content = true;
      return undefined;
    },
  });
  if (error) return error;
  if (!content) return "empty query: the parse tree holds no expression";
  return null;
}

function badInput(message) {
  process.stderr.write(`check.mjs: ${message}\n`);
  process.exit(2);
}

async function main() {
  let text = "";
  for await (const chunk of process.stdin) text += chunk;
  let queries;
  try {
    queries = JSON.parse(text);
  } catch (e) {
    badInput(`stdin is not JSON: ${e.message}`);
  }
  if (!Array.isArray(queries)) badInput("expected a JSON array of {lang, expr, source}");
  const failures = [];
  queries.forEach((q, i) => {
    if (q === null || typeof q !== "object") badInput(`item ${i} is not an object`);
    if (!Object.hasOwn(PARSERS, q.lang)) {
      badInput(`item ${i}: lang ${JSON.stringify(q.lang)} is not one of ${Object.keys(PARSERS)}`);
    }
    if (typeof q.expr !== "string") badInput(`item ${i}: expr must be a string`);
    const error = check(q.lang, q.expr);
    if (error) failures.push({ source: q.source ?? `item ${i}`, lang: q.lang, expr: q.expr, error });
  });
  process.stdout.write(JSON.stringify(failures, null, 1) + "\n");
  process.exit(failures.length ? 1 : 0);
}

await main();
