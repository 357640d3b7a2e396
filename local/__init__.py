"""The local stack: everything ``make run`` starts on a developer's machine (DynamoDB Local, a moto
server, the tables, the demo book, ``chalice local``). Never part of the Lambda package, never
imported by ``chalicelib``."""
