"""The developer stack: real infrastructure probes (`infra`: PostgreSQL, RabbitMQ, databases and
vhosts) and the launcher of the whole topology as separate processes (`stack`, behind `./run stack`,
the end-to-end tests, the chaos run and the benchmark). Not shipped with the services.
"""
