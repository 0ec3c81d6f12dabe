// Scenarios for kafkajs. Called as `node kafkajs_scenarios.js SCENARIO BOOTSTRAP TAG [ARGS...]`:
// exit 0 passed, 2 the client lacks it (first line says why), 1 failed. The shared cross-client
// format and the size limits are those of tests/clients/python/common.py.
//
// kafkajs compresses with gzip by itself; snappy, lz4 and zstd are codecs the application
// registers. Here: kafkajs-snappy, and two small pure-JS codecs below over lz4js and zstd-codec
// (kafkajs's own lz4/zstd codec packages build native modules).
'use strict'

const { Kafka, CompressionTypes, CompressionCodecs, logLevel } = require('kafkajs')
const SnappyCodec = require('kafkajs-snappy')
const lz4js = require('lz4js')
const xxh32 = require('lz4js/xxh32.js')
const { ZstdCodec } = require('zstd-codec')

const UNSUPPORTED = 2
const XC_COUNT = 20
const XC_BLOCK = 4
const CODECS = ['none', 'gzip', 'snappy', 'lz4', 'zstd']
const MAX_MESSAGE_BYTES = 65536

let zstd = null
const zstdReady = new Promise((resolve) => ZstdCodec.run((z) => { zstd = z; resolve() }))

CompressionCodecs[CompressionTypes.Snappy] = SnappyCodec
CompressionCodecs[CompressionTypes.LZ4] = () => ({
  // lz4js leaves the frame's block-independence flag unset, which Kafka's Java client refuses.
  // Its frames hold one block up to 4 MiB, so they are independent: set the flag and redo the
  // descriptor checksum.
  compress: async (encoder) => {
    if (encoder.buffer.length > 4 << 20) throw new Error('lz4 codec: over 4 MiB')
    const f = Buffer.from(lz4js.compress(encoder.buffer))
    f[4] |= 0x20
    f[6] = (xxh32.hash(0, f, 4, 2) >> 8) & 0xff
    return f
  },
  decompress: async (buffer) => lz4FrameDecode(buffer)
})

// An LZ4 frame reader over lz4js's block decoder: lz4js's own frame reader mishandles frames
// with block checksums (what cramjam, under aiokafka, writes).
function lz4FrameDecode (src) {
  if (src.readUInt32LE(0) !== 0x184d2204) throw new Error('lz4: bad frame magic')
  const flg = src[4]
  let at = 7 + ((flg & 0x08) ? 8 : 0) + ((flg & 0x01) ? 4 : 0)
  const blockSum = (flg & 0x10) !== 0
  const parts = []
  for (;;) {
    const word = src.readUInt32LE(at)
    at += 4
    if (word === 0) break
    const size = word & 0x7fffffff
    if (word & 0x80000000) {
      parts.push(src.subarray(at, at + size))
    } else {
      const dst = Buffer.alloc(4 << 20)
      const end = lz4js.decompressBlock(src, dst, at, size, 0)
      parts.push(dst.subarray(0, end))
    }
    at += size + (blockSum ? 4 : 0)
  }
  return Buffer.concat(parts)
}
CompressionCodecs[CompressionTypes.ZSTD] = () => ({
  compress: async (encoder) => {
    await zstdReady
    return Buffer.from(new zstd.Simple().compress(encoder.buffer, 3))
  },
  decompress: async (buffer) => {
    await zstdReady
    return Buffer.from(new zstd.Streaming().decompress(buffer))
  }
})

const compressionOf = {
  none: CompressionTypes.None,
  gzip: CompressionTypes.GZIP,
  snappy: CompressionTypes.Snappy,
  lz4: CompressionTypes.LZ4,
  zstd: CompressionTypes.ZSTD
}

class Failure extends Error {}
const fail = (m) => { throw new Failure(m) }

function xcMessage (tag, i) {
  const key = i % 5 === 4 ? null : Buffer.from(`key-${i}`)
  const value = Buffer.concat([Buffer.from(`${tag}:${i}:`), Buffer.from('é€😀'),
    Buffer.from([i, 0, 255]), Buffer.from('x'.repeat(i * 7))])
  const headers = [['h-index', Buffer.from(String(i))], ['h-bin', Buffer.from([0, i, 255])]]
  if (i % 3 === 0) headers.push(['h-empty', Buffer.alloc(0)])
  return { key, value, headers }
}

function kvMessages (n) {
  const out = []
  for (let i = 0; i < n; i++) {
    const key = i % 3 === 2 ? null : Buffer.from(`k${i}`)
    const headers = i % 2 === 0 ? [['hk', Buffer.from(`hv${i}`)], ['hk2', Buffer.from([0, 1])]] : []
    out.push({ key, value: Buffer.from(`value-${i}`), headers })
  }
  return out
}

// kafkajs takes headers as an object: ordered keys, unique names (fine for these messages).
const toKafkajs = (m, extra) => ({
  key: m.key, value: m.value, headers: Object.fromEntries(m.headers), ...extra
})

function fromKafkajs (r) {
  const headers = Object.entries(r.headers || {}).map(([k, v]) => [k, Buffer.from(v || [])])
  return { key: r.key, value: r.value, headers }
}

function same (a, b) {
  const eq = (x, y) => (x === null || y === null) ? x === y : Buffer.compare(x, y) === 0
  if (!eq(a.key, b.key) || !eq(a.value, b.value) || a.headers.length !== b.headers.length) return false
  return a.headers.every(([k, v], i) => k === b.headers[i][0] && eq(v, b.headers[i][1]))
}

function check (what, want, got) {
  if (want.length !== got.length) fail(`${what}: consumed ${got.length} messages, expected ${want.length}`)
  want.forEach((w, i) => {
    if (!same(w, got[i])) {
      fail(`${what} #${i}: got ${JSON.stringify(got[i])}, expected ${JSON.stringify(w)}`)
    }
  })
}

const kafkaFor = (bootstrap, tag) => new Kafka({
  clientId: `shardlog-${tag}`, brokers: [bootstrap], logLevel: process.env.KAFKAJS_LOG ? logLevel.ERROR : logLevel.NOTHING,
  retry: { retries: 3, initialRetryTime: 100 }, requestTimeout: 15000
})

async function produce (kafka, topic, msgs, opts = {}) {
  const p = kafka.producer({ allowAutoTopicCreation: true, idempotent: !!opts.idempotent, maxInFlightRequests: opts.idempotent ? 1 : undefined })
  await p.connect()
  try {
    await p.send({
      topic,
      acks: -1,
      compression: compressionOf[opts.codec || 'none'],
      messages: msgs.map((m, i) => toKafkajs(m, {
        partition: opts.partition ?? 0,
        ...(opts.timestamps ? { timestamp: String(opts.timestamps[i]) } : {})
      }))
    })
  } finally {
    await p.disconnect()
  }
}

// kafkajs has no assign(): a consumer in a fresh group that seeks partition 0 to offset 0.
async function consumeN (kafka, topic, n, timeoutMs = 20000) {
  const c = kafka.consumer({ groupId: `read-${topic}-${process.pid}-${Date.now()}` })
  await c.connect()
  const got = []
  await c.subscribe({ topic, fromBeginning: true })
  let done
  const finished = new Promise((resolve) => { done = resolve })
  await c.run({
    eachMessage: async ({ partition, message }) => {
      if (partition === 0) got.push(fromKafkajs(message))
      if (got.length >= n) done()
    }
  })
  await Promise.race([finished, new Promise((resolve) => setTimeout(resolve, timeoutMs))])
  await c.disconnect()
  return got
}

async function until (ms, what, fn) {
  const end = Date.now() + ms
  while (Date.now() < end) {
    if (await fn()) return
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  fail(`timed out waiting for ${what}`)
}

const scenarios = {
  async create_topic (kafka, tag) {
    const admin = kafka.admin()
    await admin.connect()
    const topic = `t-${tag}-create`
    if (!await admin.createTopics({ topics: [{ topic, numPartitions: 3, replicationFactor: 1 }], waitForLeaders: true })) {
      fail('createTopics answered false for a new topic')
    }
    const md = await admin.fetchTopicMetadata({ topics: [topic] })
    if (md.topics[0].partitions.length !== 3) fail(`metadata shows ${md.topics[0].partitions.length} partitions`)
    // kafkajs answers false (not an error) when the topic exists.
    if (await admin.createTopics({ topics: [{ topic, numPartitions: 3, replicationFactor: 1 }] })) {
      fail('second create answered true')
    }
    await admin.disconnect()
  },

  async group (kafka, tag) {
    const topic = `t-${tag}-group`
    const groupId = `g-${tag}`
    const admin = kafka.admin()
    await admin.connect()
    await admin.createTopics({ topics: [{ topic, numPartitions: 4, replicationFactor: 1 }], waitForLeaders: true })
    const members = []
    const got = [0, 0]
    const assigned = [0, 0]
    const start = async (i) => {
      const c = kafka.consumer({ groupId, sessionTimeout: 10000, heartbeatInterval: 500 })
      c.on(c.events.GROUP_JOIN, (e) => {
        assigned[i] = (e.payload.memberAssignment[topic] || []).length
      })
      await c.connect()
      await c.subscribe({ topic, fromBeginning: true })
      await c.run({ autoCommit: false, eachMessage: async ({ partition, message }) => {
        // Count a message once its commit is acknowledged, so the check below sees it.
        await c.commitOffsets([{ topic, partition, offset: String(Number(message.offset) + 1) }])
        got[i]++
      } })
      members.push(c)
    }
    await start(0)
    await until(20000, 'first member to get 4 partitions', () => assigned[0] === 4)
    await start(1)
    await until(30000, 'rebalance to 2+2 partitions', () => assigned[0] === 2 && assigned[1] === 2)
    for (let p = 0; p < 4; p++) {
      await produce(kafka, topic, [0, 1].map((j) => ({ key: Buffer.from('k'), value: Buffer.from(`v${p}-${j}`), headers: [] })), { partition: p })
    }
    await until(30000, '8 messages across the two members', () => got[0] + got[1] >= 8)
    if (got[0] !== 4 || got[1] !== 4) fail(`members consumed ${got}, expected 4 each`)
    const offs = await admin.fetchOffsets({ groupId, topics: [topic] })
    const vals = offs[0].partitions.map((p) => Number(p.offset)).sort()
    if (vals.join() !== '2,2,2,2') fail(`committed offsets ${JSON.stringify(offs)}, expected 2 on each partition`)
    const d = await admin.describeGroups([groupId])
    if (d.groups[0].members.length !== 2) fail(`describeGroups: ${d.groups[0].members.length} members`)
    for (const c of members) await c.disconnect()
    await admin.disconnect()
  },

  async list_offsets (kafka, tag) {
    const topic = `t-${tag}-offsets`
    const t0 = Date.now() - 60000
    const m = { key: Buffer.from('k'), value: Buffer.from('v'), headers: [] }
    await produce(kafka, topic, [m, m, m], { timestamps: [t0, t0 + 1000, t0 + 2000] })
    const admin = kafka.admin()
    await admin.connect()
    const o = (await admin.fetchTopicOffsets(topic))[0]
    if (o.low !== '0' || o.high !== '3') fail(`low/high ${o.low}/${o.high}, expected 0/3`)
    const at = (await admin.fetchTopicOffsetsByTimestamp(topic, t0 + 500))[0]
    if (at.offset !== '1') fail(`offset for t0+500: ${at.offset}, expected 1`)
    await admin.disconnect()
  },

  async idempotent (kafka, tag) {
    const topic = `t-${tag}-idem`
    const msgs = kvMessages(50)
    await produce(kafka, topic, msgs, { idempotent: true })
    check(topic, msgs, await consumeN(kafka, topic, msgs.length))
  },

  async xproduce (kafka, tag) {
    for (let block = 0; block < CODECS.length; block++) {
      const msgs = []
      for (let i = block * XC_BLOCK; i < (block + 1) * XC_BLOCK; i++) msgs.push(xcMessage(tag, i))
      await produce(kafka, `xc-${tag}`, msgs, { codec: CODECS[block] })
    }
  },

  async xconsume (kafka, tag, ...producers) {
    for (const p of producers) {
      const want = []
      for (let i = 0; i < XC_COUNT; i++) want.push(xcMessage(p, i))
      check(`xc-${p}`, want, await consumeN(kafka, `xc-${p}`, XC_COUNT))
    }
  }
}

for (const codec of CODECS) {
  scenarios[codec === 'none' ? 'produce_consume' : codec] = async (kafka, tag) => {
    const topic = `t-${tag}-pc-${codec}`
    const msgs = kvMessages(12)
    await produce(kafka, topic, msgs, { codec })
    check(topic, msgs, await consumeN(kafka, topic, msgs.length))
  }
}

for (const [name, size, wantError] of [['max_under', MAX_MESSAGE_BYTES - 512, false], ['max_over', MAX_MESSAGE_BYTES + 512, true]]) {
  scenarios[name] = async (kafka, tag) => {
    const topic = `t-${tag}-max-${size}`
    const m = { key: Buffer.from('k'), value: Buffer.from('m'.repeat(size)), headers: [] }
    try {
      await produce(kafka, topic, [m])
      if (wantError) fail(`${size}-byte value accepted, expected MESSAGE_TOO_LARGE`)
    } catch (e) {
      if (e instanceof Failure) throw e
      const type = e.type || (e.cause && e.cause.type)
      if (!wantError || type !== 'MESSAGE_TOO_LARGE') {
        fail(`${size}-byte value: ${e.name} ${type} ${e.message}`)
      }
      return
    }
    check(topic, [m], await consumeN(kafka, topic, 1))
  }
}

async function main () {
  const [scenario, bootstrap, tag, ...args] = process.argv.slice(2)
  if (scenario === 'version') {
    console.log(require('kafkajs/package.json').version)
    return 0
  }
  const fn = scenarios[scenario]
  if (!fn) {
    console.log(`no scenario ${scenario} for this client`)
    return UNSUPPORTED
  }
  try {
    await fn(kafkaFor(bootstrap, tag), tag, ...args)
  } catch (e) {
    console.log(`FAIL: ${e instanceof Failure ? e.message : (e.stack || e)}`)
    return 1
  }
  console.log('ok')
  return 0
}

if (require.main === module) main().then((code) => process.exit(code))
module.exports = {
  kafkaFor, consumeN, xcMessage, kvMessages, check, until, Failure, fail, fromKafkajs,
  UNSUPPORTED, XC_COUNT, XC_BLOCK, CODECS, MAX_MESSAGE_BYTES
}
