"""Hopper's SQS endpoint driven by the real SDK (boto3) and the AWS CLI, as an
application written for SQS would drive it: only the endpoint URL and the access
key are Hopper's. Run by tests/sqs.rs against a `hopper serve` it started, with
HOPPER_URL (the server) and HOPPER_ADMIN_SECRET (its bootstrap admin) set.
"""

import base64
import hashlib
import json
import struct
import os
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
import xml.etree.ElementTree as ET

import boto3
import botocore
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

HOPPER = os.environ["HOPPER_URL"]
ADMIN = ("admin", os.environ["HOPPER_ADMIN_SECRET"])
ENDPOINT = HOPPER + "/sqs"
REGION = "eu-west-1"


def hopper(method, path, body=None, auth=ADMIN):
    """One call of Hopper's own API; answers (status, JSON or None)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(HOPPER + path, data=data, method=method)
    token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    request.add_header("Authorization", "Basic " + token)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as error:
        raw = error.read()
        return error.code, json.loads(raw) if raw else None


def new_client(grants):
    """A Hopper client with `grants` and an AWS key pair: (id, secret, key id, key secret)."""
    client_id = "sqs-" + uuid.uuid4().hex[:12]
    status, created = hopper("POST", "/api/v1/admin/clients", {"id": client_id, "grants": grants})
    assert status == 201, created
    status, keys = hopper("POST", f"/api/v1/admin/clients/{client_id}/aws-keys")
    assert status == 201, keys
    assert set(keys) >= {"access_key_id", "secret_access_key"}
    return client_id, created["secret"], keys["access_key_id"], keys["secret_access_key"]


def sqs_client(key_id, key_secret):
    return boto3.client(
        "sqs",
        endpoint_url=ENDPOINT,
        region_name=REGION,
        aws_access_key_id=key_id,
        aws_secret_access_key=key_secret,
        config=Config(retries={"max_attempts": 1}, read_timeout=40),
    )


@pytest.fixture(scope="module")
def everything():
    """A client that may do anything on every queue, through SQS and Hopper's API."""
    client_id, secret, key_id, key_secret = new_client(["queue:*:*"])
    return sqs_client(key_id, key_secret), (client_id, secret), (key_id, key_secret)


@pytest.fixture
def sqs(everything):
    return everything[0]


def md5_of_attributes(attributes):
    """MD5OfMessageAttributes as the AWS SDKs check it (the Java SDK's
    MessageMD5ChecksumHandler): per attribute, by name, length-prefixed name, type
    and value, a transport byte (1 text, 2 binary) before the value."""
    digest = hashlib.md5()

    def field(data):
        digest.update(struct.pack("!I", len(data)) + data)

    for name in sorted(attributes):
        value = attributes[name]
        field(name.encode())
        field(value["DataType"].encode())
        if "BinaryValue" in value:
            digest.update(b"\x02")
            field(value["BinaryValue"])
        else:
            digest.update(b"\x01")
            field(value["StringValue"].encode())
    return digest.hexdigest()


def md5(text):
    return hashlib.md5(text.encode()).hexdigest()


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_standard_queue_actions(sqs):
    name = unique("orders")
    url = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "5", "DelaySeconds": "0"})["QueueUrl"]
    assert url.endswith(f"/sqs/000000000000/{name}")
    # Creating it again with the same attributes finds it; with others, refuses.
    assert sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "5"})["QueueUrl"] == url
    with pytest.raises(sqs.exceptions.QueueNameExists):
        sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "7"})
    assert sqs.get_queue_url(QueueName=name)["QueueUrl"] == url

    attributes = {
        "trace": {"DataType": "String", "StringValue": "abc"},
        "count": {"DataType": "Number", "StringValue": "42"},
        "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01\xff"},
    }
    # botocore checks MD5OfMessageBody and MD5OfMessageAttributes of every answer.
    sent = sqs.send_message(QueueUrl=url, MessageBody="hello, sqs", MessageAttributes=attributes)
    assert sent["MessageId"]
    assert sent["MD5OfMessageBody"] == md5("hello, sqs")
    assert sent["MD5OfMessageAttributes"] == md5_of_attributes(attributes)

    got = sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"],
        MessageSystemAttributeNames=["All"], WaitTimeSeconds=1,
    )["Messages"]
    assert len(got) == 1
    message = got[0]
    assert message["Body"] == "hello, sqs"
    assert message["MessageId"] == sent["MessageId"]
    assert message["MessageAttributes"]["blob"]["BinaryValue"] == b"\x00\x01\xff"
    assert message["MessageAttributes"]["count"]["StringValue"] == "42"
    assert message["MD5OfBody"] == md5("hello, sqs")
    assert message["MD5OfMessageAttributes"] == md5_of_attributes(attributes)
    system = message["Attributes"]
    assert system["ApproximateReceiveCount"] == "1"
    assert int(system["SentTimestamp"]) <= int(system["ApproximateFirstReceiveTimestamp"])
    # Only the attributes asked for come back.
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0)
    again = sqs.receive_message(QueueUrl=url, MessageAttributeNames=["trace"], WaitTimeSeconds=1)["Messages"][0]
    assert set(again["MessageAttributes"]) == {"trace"}
    assert again["MD5OfMessageAttributes"] == md5_of_attributes({"trace": attributes["trace"]})
    assert "Attributes" not in again
    counts = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert counts["ApproximateNumberOfMessagesNotVisible"] == "1"
    assert counts["VisibilityTimeout"] == "5"
    assert counts["QueueArn"] == f"arn:aws:sqs:{REGION}:000000000000:{name}"
    sqs.delete_message(QueueUrl=url, ReceiptHandle=again["ReceiptHandle"])
    # Deleting with an old receipt handle is not an error; a malformed one is.
    sqs.delete_message(QueueUrl=url, ReceiptHandle=again["ReceiptHandle"])
    with pytest.raises(sqs.exceptions.ReceiptHandleIsInvalid):
        sqs.delete_message(QueueUrl=url, ReceiptHandle="not-a-handle")

    # Batches, with per-entry failures.
    batch = sqs.send_message_batch(QueueUrl=url, Entries=[
        {"Id": "a", "MessageBody": "one"},
        {"Id": "b", "MessageBody": "two", "DelaySeconds": 60},
        {"Id": "c", "MessageBody": "three", "MessageAttributes": {"bad": {"DataType": "Number", "StringValue": "x"}}},
    ])
    assert sorted(e["Id"] for e in batch["Successful"]) == ["a", "b"]
    assert [(f["Id"], f["SenderFault"]) for f in batch["Failed"]] == [("c", True)]
    with pytest.raises(sqs.exceptions.TooManyEntriesInBatchRequest):
        sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": "x"} for i in range(11)])
    with pytest.raises(sqs.exceptions.BatchEntryIdsNotDistinct):
        sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": "x", "MessageBody": "1"}, {"Id": "x", "MessageBody": "2"}])
    counts = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesDelayed"]
    )["Attributes"]
    assert counts == {"ApproximateNumberOfMessages": "1", "ApproximateNumberOfMessagesDelayed": "1"}
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)["Messages"]
    assert [m["Body"] for m in got] == ["one"]
    changed = sqs.change_message_visibility_batch(QueueUrl=url, Entries=[
        {"Id": "ok", "ReceiptHandle": got[0]["ReceiptHandle"], "VisibilityTimeout": 30},
        {"Id": "bad", "ReceiptHandle": "1.0000000000000000", "VisibilityTimeout": 30},
    ])
    assert [e["Id"] for e in changed["Successful"]] == ["ok"]
    assert [f["Id"] for f in changed["Failed"]] == ["bad"]
    deleted = sqs.delete_message_batch(QueueUrl=url, Entries=[{"Id": "d", "ReceiptHandle": got[0]["ReceiptHandle"]}])
    assert [e["Id"] for e in deleted["Successful"]] == ["d"]

    # An empty receive has no Messages at all.
    assert "Messages" not in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0)

    sqs.set_queue_attributes(QueueUrl=url, Attributes={"DelaySeconds": "2", "ReceiveMessageWaitTimeSeconds": "1"})
    shown = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["DelaySeconds", "ReceiveMessageWaitTimeSeconds"])
    assert shown["Attributes"] == {"DelaySeconds": "2", "ReceiveMessageWaitTimeSeconds": "1"}
    with pytest.raises(sqs.exceptions.InvalidAttributeName):
        sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["NoSuchAttribute"])

    sqs.purge_queue(QueueUrl=url)
    counts = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert counts["ApproximateNumberOfMessagesDelayed"] == "0"
    sqs.delete_queue(QueueUrl=url)
    with pytest.raises(sqs.exceptions.QueueDoesNotExist) as raised:
        sqs.get_queue_url(QueueName=name)
    # The legacy code reaches application code too, as SQS's x-amzn-query-error sends it.
    assert raised.value.response["Error"]["Code"] == "AWS.SimpleQueueService.NonExistentQueue"
    with pytest.raises(sqs.exceptions.QueueDoesNotExist):
        sqs.send_message(QueueUrl=url, MessageBody="to nowhere")


def test_list_queues_by_prefix_and_page(sqs):
    prefix = unique("listed")
    names = [f"{prefix}-{i}" for i in range(5)]
    for name in names:
        sqs.create_queue(QueueName=name)
    everything = sqs.list_queues(QueueNamePrefix=prefix)["QueueUrls"]
    assert [u.rsplit("/", 1)[1] for u in everything] == names
    first = sqs.list_queues(QueueNamePrefix=prefix, MaxResults=2)
    assert len(first["QueueUrls"]) == 2 and "NextToken" in first
    seen = list(first["QueueUrls"])
    token = first["NextToken"]
    while token:
        page = sqs.list_queues(QueueNamePrefix=prefix, MaxResults=2, NextToken=token)
        seen += page["QueueUrls"]
        token = page.get("NextToken")
    assert seen == everything
    assert "QueueUrls" not in sqs.list_queues(QueueNamePrefix=unique("none"))


def test_fifo_orders_each_group_with_a_slow_consumer(sqs):
    url = sqs.create_queue(
        QueueName=unique("jobs") + ".fifo",
        Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true", "VisibilityTimeout": "30"},
    )["QueueUrl"]
    for i in range(4):
        for group in ("a", "b", "c"):
            sqs.send_message(QueueUrl=url, MessageBody=f"{group}{i}", MessageGroupId=group)
    seen = {"a": [], "b": [], "c": []}
    # A slow consumer holds one message per group: the group's next never overtakes it.
    first = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, MessageSystemAttributeNames=["MessageGroupId"])["Messages"]
    assert sorted(m["Body"] for m in first) == ["a0", "b0", "c0"]
    assert "Messages" not in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)
    time.sleep(0.5)
    for m in first:
        seen[m["Attributes"]["MessageGroupId"]].append(m["Body"])
        sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    while True:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, MessageSystemAttributeNames=["MessageGroupId"]).get("Messages", [])
        if not got:
            break
        groups = [m["Attributes"]["MessageGroupId"] for m in got]
        assert len(groups) == len(set(groups)), "one message per group at a time"
        for m in got:
            seen[m["Attributes"]["MessageGroupId"]].append(m["Body"])
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    assert seen == {g: [f"{g}{i}" for i in range(4)] for g in "abc"}
    # FIFO needs a group, and takes no per-message delay.
    with pytest.raises(botocore.exceptions.ClientError):
        sqs.send_message(QueueUrl=url, MessageBody="x")
    with pytest.raises(botocore.exceptions.ClientError):
        sqs.send_message(QueueUrl=url, MessageBody="x", MessageGroupId="a", DelaySeconds=5)
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attributes["FifoQueue"] == "true"
    assert attributes["ContentBasedDeduplication"] == "true"


def test_fifo_deduplicates_within_five_minutes_even_after_delete(sqs):
    url = sqs.create_queue(QueueName=unique("dedup") + ".fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    first = sqs.send_message(QueueUrl=url, MessageBody="pay 10", MessageGroupId="g", MessageDeduplicationId="pay-1")
    got = sqs.receive_message(QueueUrl=url)["Messages"]
    sqs.delete_message(QueueUrl=url, ReceiptHandle=got[0]["ReceiptHandle"])
    again = sqs.send_message(QueueUrl=url, MessageBody="pay 10", MessageGroupId="g", MessageDeduplicationId="pay-1")
    assert again["MessageId"] == first["MessageId"]
    assert "Messages" not in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)
    # Without ContentBasedDeduplication, a deduplication id is required.
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        sqs.send_message(QueueUrl=url, MessageBody="x", MessageGroupId="g")
    assert raised.value.response["Error"]["Code"] == "InvalidParameterValue"


def test_dead_letters_move_to_the_redrive_target(sqs):
    dlq = sqs.create_queue(QueueName=unique("dead"))["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    policy = json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": 2})
    url = sqs.create_queue(QueueName=unique("work"), Attributes={"RedrivePolicy": policy, "VisibilityTimeout": "1"})["QueueUrl"]
    shown = json.loads(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["RedrivePolicy"])["Attributes"]["RedrivePolicy"])
    assert shown == {"deadLetterTargetArn": arn, "maxReceiveCount": 2}
    sqs.send_message(QueueUrl=url, MessageBody="poison", MessageAttributes={"k": {"DataType": "String", "StringValue": "v"}})
    for attempt in (1, 2):
        got = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=5, MessageSystemAttributeNames=["ApproximateReceiveCount"])["Messages"]
        assert got[0]["Attributes"]["ApproximateReceiveCount"] == str(attempt)
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=got[0]["ReceiptHandle"], VisibilityTimeout=0)
    dead = sqs.receive_message(QueueUrl=dlq, WaitTimeSeconds=10, MessageAttributeNames=["All"])["Messages"]
    assert dead[0]["Body"] == "poison"
    assert dead[0]["MessageAttributes"]["k"]["StringValue"] == "v"
    assert "Messages" not in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0)
    sources = sqs.list_dead_letter_source_queues(QueueUrl=dlq)["queueUrls"]
    assert sources == [url]
    # A redrive target that does not exist is refused.
    with pytest.raises(botocore.exceptions.ClientError):
        missing = json.dumps({"deadLetterTargetArn": arn + "-missing", "maxReceiveCount": 2})
        sqs.set_queue_attributes(QueueUrl=url, Attributes={"RedrivePolicy": missing})


def test_a_long_poll_is_woken_by_a_send(sqs):
    url = sqs.create_queue(QueueName=unique("waiting"))["QueueUrl"]
    sender = threading.Timer(1.0, lambda: sqs.send_message(QueueUrl=url, MessageBody="wake up"))
    started = time.monotonic()
    sender.start()
    got = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=20)["Messages"]
    waited = time.monotonic() - started
    sender.join()
    assert got[0]["Body"] == "wake up"
    assert 0.9 <= waited < 10, waited
    # With nothing sent, the wait runs its time.
    started = time.monotonic()
    assert "Messages" not in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=2)
    assert time.monotonic() - started >= 1.9


def test_messages_cross_between_sqs_and_hopper_api(everything):
    sqs, hopper_credentials, _ = everything
    name = unique("shared")
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="plain text")
    sqs.send_message(QueueUrl=url, MessageBody='{"order": 7}')
    status, received = hopper("POST", f"/api/v1/queues/{name}/receive?count=10", auth=hopper_credentials)
    assert status == 200, received
    assert [m["body"] for m in received["messages"]] == ["plain text", {"order": 7}]
    status, _ = hopper("POST", f"/api/v1/queues/{name}/ack", {"receipts": [m["receipt"] for m in received["messages"]]}, auth=hopper_credentials)
    assert status == 200
    status, pushed = hopper("POST", f"/api/v1/queues/{name}/messages", {"from": "hopper"}, auth=hopper_credentials)
    assert status == 201
    got = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)["Messages"]
    assert got[0]["MessageId"] == pushed["id"]
    assert json.loads(got[0]["Body"]) == {"from": "hopper"}


def test_grants_apply_and_bad_credentials_are_refused(everything):
    sqs = everything[0]
    name = unique("guarded")
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    _, _, key_id, key_secret = new_client([f"queue:{name}:produce"])
    producer = sqs_client(key_id, key_secret)
    producer.send_message(QueueUrl=url, MessageBody="allowed")
    for forbidden in (
        lambda: producer.receive_message(QueueUrl=url),
        lambda: producer.purge_queue(QueueUrl=url),
        lambda: producer.create_queue(QueueName=unique("other")),
    ):
        with pytest.raises(botocore.exceptions.ClientError) as raised:
            forbidden()
        assert raised.value.response["Error"]["Code"] == "AccessDenied"
    # Other queues are not listed to it.
    listed = producer.list_queues().get("QueueUrls", [])
    assert listed == [url]
    wrong_secret = sqs_client(key_id, "x" * 40)
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        wrong_secret.send_message(QueueUrl=url, MessageBody="x")
    assert raised.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    unknown = sqs_client("HOPRAAAAAAAAAAAAAAAA", key_secret)
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        unknown.send_message(QueueUrl=url, MessageBody="x")
    assert raised.value.response["Error"]["Code"] == "InvalidClientTokenId"
    temporary = boto3.client(
        "sqs", endpoint_url=ENDPOINT, region_name=REGION, aws_access_key_id=key_id,
        aws_secret_access_key=key_secret, aws_session_token="session",
        config=Config(retries={"max_attempts": 1}),
    )
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        temporary.send_message(QueueUrl=url, MessageBody="x")
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def signed_query(key_id, key_secret, url, params):
    """A query-protocol request as older SDKs send it, signed by botocore's SigV4."""
    body = urllib.parse.urlencode(params)
    request = AWSRequest(method="POST", url=url, data=body,
                         headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
    SigV4Auth(Credentials(key_id, key_secret), "sqs", REGION).add_auth(request)
    prepared = urllib.request.Request(url, data=body.encode(), method="POST", headers=dict(request.headers))
    try:
        with urllib.request.urlopen(prepared, timeout=30) as response:
            return response.status, response.headers, ET.fromstring(response.read())
    except urllib.error.HTTPError as error:
        return error.code, error.headers, ET.fromstring(error.read())


NS = {"sqs": "http://queue.amazonaws.com/doc/2012-11-05/"}


def test_the_query_protocol_answers_in_xml(everything):
    _, _, (key_id, key_secret) = everything
    name = unique("legacy")
    status, _, created = signed_query(key_id, key_secret, ENDPOINT, {
        "Action": "CreateQueue", "QueueName": name, "Attribute.1.Name": "VisibilityTimeout",
        "Attribute.1.Value": "10", "Version": "2012-11-05",
    })
    assert status == 200
    url = created.find("sqs:CreateQueueResult/sqs:QueueUrl", NS).text
    status, _, sent = signed_query(key_id, key_secret, url, {
        "Action": "SendMessage", "MessageBody": "<xml & text>",
        "MessageAttribute.1.Name": "k", "MessageAttribute.1.Value.DataType": "String",
        "MessageAttribute.1.Value.StringValue": "v",
    })
    assert status == 200
    assert sent.find("sqs:SendMessageResult/sqs:MD5OfMessageBody", NS).text
    status, _, received = signed_query(key_id, key_secret, url, {
        "Action": "ReceiveMessage", "MessageAttributeName.1": "All", "AttributeName.1": "All",
    })
    message = received.find("sqs:ReceiveMessageResult/sqs:Message", NS)
    assert message.find("sqs:Body", NS).text == "<xml & text>"
    names = {a.find("sqs:Name", NS).text for a in message.findall("sqs:Attribute", NS)}
    assert {"ApproximateReceiveCount", "SentTimestamp"} <= names
    attribute = message.find("sqs:MessageAttribute", NS)
    assert attribute.find("sqs:Value/sqs:StringValue", NS).text == "v"
    status, _, error = signed_query(key_id, key_secret, ENDPOINT, {"Action": "GetQueueUrl", "QueueName": unique("absent")})
    assert status == 400
    assert error.find("sqs:Error/sqs:Code", NS).text == "AWS.SimpleQueueService.NonExistentQueue"
    assert error.find("sqs:Error/sqs:Type", NS).text == "Sender"


def test_the_aws_cli_works_unchanged(everything):
    _, _, (key_id, key_secret) = everything
    env = dict(os.environ, AWS_ACCESS_KEY_ID=key_id, AWS_SECRET_ACCESS_KEY=key_secret,
               AWS_DEFAULT_REGION=REGION, AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null")
    aws = os.path.join(os.path.dirname(sys.executable), "aws")

    def cli(*args):
        done = subprocess.run([aws, "--endpoint-url", ENDPOINT, "--output", "json", "sqs", *args],
                              env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout) if done.stdout.strip() else None

    name = unique("cli")
    url = cli("create-queue", "--queue-name", name)["QueueUrl"]
    cli("send-message", "--queue-url", url, "--message-body", "from the cli")
    got = cli("receive-message", "--queue-url", url, "--wait-time-seconds", "2")["Messages"]
    assert got[0]["Body"] == "from the cli"
    cli("delete-message", "--queue-url", url, "--receipt-handle", got[0]["ReceiptHandle"])
    assert url in cli("list-queues", "--queue-name-prefix", name)["QueueUrls"]
    cli("delete-queue", "--queue-url", url)
