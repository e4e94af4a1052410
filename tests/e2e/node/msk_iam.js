// kafkajs with the AWS_MSK_IAM SASL mechanism of @jm18457/kafkajs-msk-iam-authentication-mechanism,
// configured as its README says, against Tollgate with an access key Tollgate issued.
//
//   node msk_iam.js flow    <bootstrap> <region> <key id> <secret> <topic> <count>
//       creates the topic, produces <count> records, consumes them back in a group and prints
//       {"consumed": [[key, value], ...]} on stdout
//   node msk_iam.js connect <bootstrap> <region> <key id> <secret>
//       connects an admin client and lists topics; exits 0 if that worked, else 1 with the
//       error on stderr
const { Kafka, logLevel } = require("kafkajs");
const { createMechanism } = require("@jm18457/kafkajs-msk-iam-authentication-mechanism");

async function main() {
  const [mode, bootstrap, region, accessKeyId, secretAccessKey, topic, count] = process.argv.slice(2);
  const kafka = new Kafka({
    brokers: [bootstrap],
    clientId: "tollgate-e2e-kafkajs",
    ssl: false,
    sasl: createMechanism({ region, credentials: { accessKeyId, secretAccessKey } }),
    logLevel: logLevel.ERROR,
    retry: { retries: mode === "connect" ? 0 : 5 },
  });
  const admin = kafka.admin();
  await admin.connect();
  if (mode === "connect") {
    await admin.listTopics();
    await admin.disconnect();
    return;
  }
  const n = Number(count);
  await admin.createTopics({ topics: [{ topic, numPartitions: 2 }], waitForLeaders: true });
  await admin.disconnect();

  const producer = kafka.producer();
  await producer.connect();
  const messages = Array.from({ length: n }, (_, i) => ({ key: `k${i}`, value: `v${i}` }));
  await producer.send({ topic, messages });
  await producer.disconnect();

  const consumer = kafka.consumer({ groupId: `${topic}-group` });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const got = [];
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`consumed ${got.length} of ${n} in 90 s`)), 90000);
    consumer.run({
      eachMessage: async ({ message }) => {
        got.push([message.key.toString(), message.value.toString()]);
        if (got.length >= n) {
          clearTimeout(timer);
          resolve();
        }
      },
    }).catch(reject);
  });
  await consumer.disconnect();
  got.sort();
  console.log(JSON.stringify({ consumed: got }));
}

main().catch((e) => {
  console.error(String((e && e.stack) || e));
  process.exit(1);
});
