"""The PostgreSQL store: the CAStore over one database shared by any number of CA replicas."""
