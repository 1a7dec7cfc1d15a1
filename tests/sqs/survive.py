"""Half of tests/sqs.rs's kill test: `send` creates a standard and a FIFO queue
and sends messages through boto3, printing nothing until every send was answered;
`receive` (after Hopper was killed with SIGKILL and started again) receives and
deletes them all and checks each came back once, FIFO in order."""

import os
import sys

import boto3
from botocore.config import Config

sqs = boto3.client(
    "sqs",
    endpoint_url=os.environ["HOPPER_URL"] + "/sqs",
    region_name="us-east-1",
    aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
    aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
    config=Config(retries={"max_attempts": 1}),
)
COUNT = 50

if sys.argv[1] == "send":
    standard = sqs.create_queue(QueueName="survivor")["QueueUrl"]
    fifo = sqs.create_queue(QueueName="survivor.fifo", Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"})["QueueUrl"]
    for i in range(COUNT):
        sqs.send_message(QueueUrl=standard, MessageBody=f"m{i}")
        sqs.send_message(QueueUrl=fifo, MessageBody=f"f{i}", MessageGroupId="g")
    batch = [{"Id": str(i), "MessageBody": f"b{i}"} for i in range(10)]
    assert not sqs.send_message_batch(QueueUrl=standard, Entries=batch).get("Failed")
    print("sent")
else:
    standard = sqs.get_queue_url(QueueName="survivor")["QueueUrl"]
    fifo = sqs.get_queue_url(QueueName="survivor.fifo")["QueueUrl"]

    def drain(url):
        bodies = []
        while True:
            got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
            if not got:
                return bodies
            for m in got:
                bodies.append(m["Body"])
                sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])

    got = drain(standard)
    assert sorted(got) == sorted([f"m{i}" for i in range(COUNT)] + [f"b{i}" for i in range(10)]), got
    assert drain(fifo) == [f"f{i}" for i in range(COUNT)]
    print("received")
