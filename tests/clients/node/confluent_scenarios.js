// Scenarios for @confluentinc/kafka-javascript (librdkafka inside), through its KafkaJS-style
// API. Same contract and shared format as kafkajs_scenarios.js, whose helpers it uses.
'use strict'

const { KafkaJS, librdkafkaVersion } = require('@confluentinc/kafka-javascript')
const h = require('./kafkajs_scenarios.js')

const { Kafka, logLevel } = KafkaJS

const kafkaFor = (bootstrap, tag) => new Kafka({
  kafkaJS: { brokers: [bootstrap], clientId: `shardlog-${tag}`, logLevel: process.env.KAFKAJS_LOG ? logLevel.ERROR : logLevel.NOTHING }
})

const toMessage = (m, extra) => ({ key: m.key, value: m.value, headers: Object.fromEntries(m.headers), ...extra })

async function produce (kafka, topic, msgs, opts = {}) {
  const p = kafka.producer({
    kafkaJS: { acks: -1, compression: opts.codec || 'none', idempotent: !!opts.idempotent, allowAutoTopicCreation: true },
    'linger.ms': 5,
    'message.timeout.ms': 20000
  })
  await p.connect()
  try {
    await p.send({
      topic,
      messages: msgs.map((m, i) => toMessage(m, {
        partition: opts.partition ?? 0,
        ...(opts.timestamps ? { timestamp: String(opts.timestamps[i]) } : {})
      }))
    })
  } finally {
    await p.disconnect()
  }
}

async function consumeN (kafka, topic, n, timeoutMs = 20000) {
  const c = kafka.consumer({ kafkaJS: { groupId: `read-${topic}-${process.pid}-${Date.now()}`, fromBeginning: true, autoCommit: false } })
  await c.connect()
  await c.subscribe({ topics: [topic] })
  const got = []
  let done
  const finished = new Promise((resolve) => { done = resolve })
  c.run({
    eachMessage: async ({ partition, message }) => {
      if (partition === 0) got.push(h.fromKafkajs(message))
      if (got.length >= n) done()
    }
  })
  await Promise.race([finished, new Promise((resolve) => setTimeout(resolve, timeoutMs))])
  await c.disconnect()
  return got
}

const scenarios = {
  async create_topic (kafka, tag) {
    const admin = kafka.admin()
    await admin.connect()
    const topic = `t-${tag}-create`
    await admin.createTopics({ topics: [{ topic, numPartitions: 3, replicationFactor: 1 }] })
    const md = await admin.fetchTopicMetadata({ topics: [topic] })
    const t = (md.topics || md)[0]
    if (t.partitions.length !== 3) h.fail(`metadata shows ${t.partitions.length} partitions`)
    let again
    try {
      again = await admin.createTopics({ topics: [{ topic, numPartitions: 3, replicationFactor: 1 }] })
    } catch (e) {
      if (!/exist/i.test(String(e.message))) throw e
      again = false
    }
    if (again) h.fail('second create answered true')
    await admin.disconnect()
  },

  async group (kafka, tag) {
    const topic = `t-${tag}-group`
    const groupId = `g-${tag}`
    const admin = kafka.admin()
    await admin.connect()
    await admin.createTopics({ topics: [{ topic, numPartitions: 4, replicationFactor: 1 }] })
    const got = [0, 0]
    const members = []
    const start = async (i) => {
      const c = kafka.consumer({ kafkaJS: { groupId, fromBeginning: true, autoCommit: false, sessionTimeout: 10000 } })
      await c.connect()
      await c.subscribe({ topics: [topic] })
      c.run({
        eachMessage: async ({ partition, message }) => {
          // Count a message once its commit is acknowledged, so the check below sees it.
          await c.commitOffsets([{ topic, partition, offset: String(Number(message.offset) + 1) }])
          got[i]++
        }
      })
      members.push(c)
    }
    await start(0)
    await h.until(20000, 'first member to get 4 partitions', () => members[0].assignment().length === 4)
    await start(1)
    await h.until(30000, 'rebalance to 2+2 partitions', () =>
      members[0].assignment().length === 2 && members[1].assignment().length === 2)
    for (let p = 0; p < 4; p++) {
      await produce(kafka, topic, [0, 1].map((j) => ({ key: Buffer.from('k'), value: Buffer.from(`v${p}-${j}`), headers: [] })), { partition: p })
    }
    await h.until(30000, '8 messages across the two members', () => got[0] + got[1] >= 8)
    if (got[0] !== 4 || got[1] !== 4) h.fail(`members consumed ${got}, expected 4 each`)
    const offs = (await admin.fetchOffsets({ groupId })).filter((t) => t.topic === topic)
    if (!offs[0] || !offs[0].partitions) h.fail(`fetchOffsets answered ${JSON.stringify(offs)}`)
    const vals = offs[0].partitions.map((p) => Number(p.offset)).sort()
    if (vals.join() !== '2,2,2,2') h.fail(`committed offsets ${JSON.stringify(offs)}, expected 2 on each partition`)
    const d = await admin.describeGroups([groupId])
    if (d.groups[0].members.length !== 2) h.fail(`describeGroups: ${d.groups[0].members.length} members`)
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
    if (String(o.low) !== '0' || String(o.high) !== '3') h.fail(`low/high ${o.low}/${o.high}, expected 0/3`)
    const at = (await admin.fetchTopicOffsetsByTimestamp(topic, t0 + 500))[0]
    if (String(at.offset) !== '1') h.fail(`offset for t0+500: ${at.offset}, expected 1`)
    await admin.disconnect()
  },

  async idempotent (kafka, tag) {
    const topic = `t-${tag}-idem`
    const msgs = h.kvMessages(50)
    await produce(kafka, topic, msgs, { idempotent: true })
    h.check(topic, msgs, await consumeN(kafka, topic, msgs.length))
  },

  async xproduce (kafka, tag) {
    for (let block = 0; block < h.CODECS.length; block++) {
      const msgs = []
      for (let i = block * h.XC_BLOCK; i < (block + 1) * h.XC_BLOCK; i++) msgs.push(h.xcMessage(tag, i))
      await produce(kafka, `xc-${tag}`, msgs, { codec: h.CODECS[block] })
    }
  },

  async xconsume (kafka, tag, ...producers) {
    for (const p of producers) {
      const want = []
      for (let i = 0; i < h.XC_COUNT; i++) want.push(h.xcMessage(p, i))
      h.check(`xc-${p}`, want, await consumeN(kafka, `xc-${p}`, h.XC_COUNT))
    }
  }
}

for (const codec of h.CODECS) {
  scenarios[codec === 'none' ? 'produce_consume' : codec] = async (kafka, tag) => {
    const topic = `t-${tag}-pc-${codec}`
    const msgs = h.kvMessages(12)
    await produce(kafka, topic, msgs, { codec })
    h.check(topic, msgs, await consumeN(kafka, topic, msgs.length))
  }
}

for (const [name, size, wantError] of [['max_under', h.MAX_MESSAGE_BYTES - 512, false], ['max_over', h.MAX_MESSAGE_BYTES + 512, true]]) {
  scenarios[name] = async (kafka, tag) => {
    const topic = `t-${tag}-max-${size}`
    const m = { key: Buffer.from('k'), value: Buffer.from('m'.repeat(size)), headers: [] }
    try {
      await produce(kafka, topic, [m])
      if (wantError) h.fail(`${size}-byte value accepted, expected MESSAGE_TOO_LARGE`)
    } catch (e) {
      if (e instanceof h.Failure) throw e
      if (!wantError || !/too large/i.test(String(e.message))) h.fail(`${size}-byte value: ${e.name} ${e.code} ${e.message}`)
      return
    }
    h.check(topic, [m], await consumeN(kafka, topic, 1))
  }
}

async function main () {
  const [scenario, bootstrap, tag, ...args] = process.argv.slice(2)
  if (scenario === 'version') {
    console.log(`${require('@confluentinc/kafka-javascript/package.json').version} (librdkafka ${librdkafkaVersion})`)
    return 0
  }
  const fn = scenarios[scenario]
  if (!fn) {
    console.log(`no scenario ${scenario} for this client`)
    return h.UNSUPPORTED
  }
  try {
    await fn(kafkaFor(bootstrap, tag), tag, ...args)
  } catch (e) {
    console.log(`FAIL: ${e instanceof h.Failure ? e.message : (e.stack || e)}`)
    return 1
  }
  console.log('ok')
  return 0
}

main().then((code) => process.exit(code))
