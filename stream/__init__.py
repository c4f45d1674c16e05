"""The Faust application of streamrec: records, topics, tables, pure logic and agents."""
