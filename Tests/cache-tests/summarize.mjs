// Counts the results of a cache-tests run by kind (pass, fail, optional_fail, ...) and lists
// every test that did not pass, with its message. Run from the suite's checkout:
//   node summarize.mjs results.json
import fs from 'fs'
import tests from './tests/index.mjs'
import { determineTestResult, resultTypes } from './test-engine/lib/results.mjs'
const results = JSON.parse(fs.readFileSync(process.argv[2]))
const counts = {}
const lists = {}
for (const suite of tests) for (const test of suite.tests) {
  const r = determineTestResult(tests, test.id, results)
  const name = Object.keys(resultTypes).find(k => resultTypes[k] === r)
  counts[name] = (counts[name] || 0) + 1
  ;(lists[name] = lists[name] || []).push(test.id + (Array.isArray(results[test.id]) ? ' :: ' + results[test.id][1] : ''))
}
console.log(JSON.stringify(counts))
for (const k of ['fail', 'harness_fail', 'setup_fail', 'optional_fail', 'dependency_fail', 'retry']) {
  if (lists[k]) { console.log('== ' + k); for (const l of lists[k]) console.log('  ' + l) }
}
