// Runs the interim tests with node:http (which reports 1xx as 'information' events).
import http from 'http'
import tests from './tests/index.mjs'
import { inflateRequests, init as makeInit } from './test-engine/client/fetching.mjs'
const base = process.argv[2]
function request (method, url, headers, body) {
  return new Promise((resolve, reject) => {
    const interim = []
    const req = http.request(url, { method, headers }, res => {
      let data = ''
      res.on('data', c => { data += c })
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, interim, body: data }))
    })
    req.on('information', info => interim.push([info.statusCode, info.headers]))
    req.on('error', reject)
    if (body) req.write(body)
    req.end()
  })
}
const suite = tests.find(s => s.id === 'interim')
for (const test of suite.tests) {
  const uuid = Math.random().toString(36).slice(2)
  const requests = inflateRequests(test)
  const put = await request('PUT', `${base}/config/${uuid}`, { 'content-type': 'application/json' }, JSON.stringify(requests))
  let ok = put.status === 201
  const notes = []
  for (let i = 0; i < requests.length; i++) {
    const headers = Object.fromEntries(makeInit(i, requests[i]).headers)
    const res = await request('GET', `${base}/test/${uuid}`, headers)
    const num = parseInt(res.headers['server-request-count'])
    if ('expected_interim_responses' in requests[i]) {
      const want = requests[i].expected_interim_responses.map(r => r[0])
      const got = res.interim.map(r => r[0])
      if (JSON.stringify(want) !== JSON.stringify(got)) { ok = false; notes.push(`req ${i + 1} interim ${JSON.stringify(got)} want ${JSON.stringify(want)}`) }
      for (const [j, r] of requests[i].expected_interim_responses.entries()) {
        for (const [name, value] of (r[1] || [])) {
          if (!res.interim[j] || res.interim[j][1][name] !== value) { ok = false; notes.push(`req ${i + 1} interim header ${name}`) }
        }
      }
    }
    if (requests[i].expected_type === 'cached' && !(num < i + 1)) { ok = false; notes.push(`req ${i + 1} not cached`) }
    for (const name of requests[i].expected_response_headers_missing || []) {
      if (name in res.headers) { ok = false; notes.push(`req ${i + 1} has ${name}`) }
    }
    if (requests[i].pause_after) await new Promise(r => setTimeout(r, 3000))
  }
  console.log(`${test.id}: ${ok ? 'pass' : 'FAIL ' + notes.join('; ')}`)
}
