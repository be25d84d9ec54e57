"""The Ray Serve application: instance deployments, the router (ingress + scheduler), metrics.

builder.py turns a plan into the application; router.py serves OpenAI HTTP and handle methods;
engine_deployment.py runs one engine per replica; replica_router.py and instance_directory.py let
the router reach one exact replica. Only this package and hetserve.app import ray.
"""
