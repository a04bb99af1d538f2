"""The queries of the services, behind functions named for what they find or change.

Repositories take the request's session and never commit; the services decide what to do
with what they return. (The guards' hot reads are in `services/user_state.py`: one
statement each, straight through the driver.)
"""
