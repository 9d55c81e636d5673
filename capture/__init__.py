"""tapwatch.capture: packets (pcap files or a live interface) to CIC-IDS2017 flow records, via NFStream."""
